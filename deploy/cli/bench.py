"""``kws bench``: CPU, latency and memory of listening, optionally beside openWakeWord and microWakeWord."""

from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def bench(
    model: Path = typer.Argument(..., help="Exported model (.onnx) to measure."),
    audio: Optional[Path] = typer.Argument(
        None, help="16 kHz WAV to listen to (keyword times from a .json beside it) (default: a generated stream; needs the training side)."
    ),
    against: Optional[str] = typer.Option(
        None, help="Also measure these engines in the same run, comma-separated: openwakeword,microwakeword (installed once into a separate venv)."
    ),
    out: Path = typer.Option(Path("runs/bench"), "--out", "-o", help="Folder for bench.json, bench.md and the generated stream."),
    chunk: int = typer.Option(1600, min=1, help="Samples per chunk, as a microphone delivers them (1600 = 100 ms)."),
    min_audio: float = typer.Option(300.0, min=0.0, help="Play the stream back to back until it lasts this many seconds (steadier CPU figures)."),
    copies: str = typer.Option("1,2,4", help="Numbers of models sharing one MFCC front end to measure, comma-separated."),
    against_venv: Optional[Path] = typer.Option(None, help="Venv for the --against engines (default: benchmarks/.venv-against)."),
    rounds: int = typer.Option(3, min=1, help="Run every engine this many times, interleaved; report each one's median round (CPU share drifts on a shared machine)."),
) -> None:
    """Stream audio through the detector as the listener does and report its cost (JSON and Markdown)."""
    from deploy.bench import run_bench
    from features.errors import ConfigError

    engines = [e.strip().lower() for e in against.split(",") if e.strip()] if against else []
    try:
        n_copies = tuple(int(c) for c in copies.split(",") if c.strip())
    except ValueError:
        raise ConfigError(f"--copies takes whole numbers separated by commas, got {copies!r}") from None
    report = run_bench(model, audio, against=engines, out_dir=out, chunk=chunk, min_audio_s=min_audio,
                       copies=n_copies or (1,), against_venv=against_venv, rounds=rounds)
    typer.echo((out / "bench.md").read_text(encoding="utf-8"))
    typer.echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}")
    del report
