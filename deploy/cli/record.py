"""``kws record``: a volunteer recording session (terminal UI, or scripted with ``--yes``)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def record(
    dataset: Path = typer.Argument(..., help="Dataset folder; the session gets its own sub-folder and manifest."),
    keyword: Optional[str] = typer.Option(None, "--keyword", "-k", help="The wake word or phrase to record (not needed with --resume)."),
    takes: int = typer.Option(10, min=0, help="Takes of the keyword."),
    negatives: int = typer.Option(10, min=0, help="Negative prompts: confusable words and ordinary sentences."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Input device: index or part of its name (default: system default)."),
    device_rate: Optional[int] = typer.Option(None, "--device-rate", min=8000, help="Open the device at this rate and resample (default: 16000 if accepted, else its own rate)."),
    output_device: Optional[str] = typer.Option(None, "--output-device", help="Device for playing takes back."),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Pseudonymous speaker id (default: the next free spk-NNN)."),
    accent: Optional[str] = typer.Option(None, "--accent", help="Accent, free text (reuse the dataset's tags where they fit)."),
    gender: Optional[str] = typer.Option(None, "--gender", help="Optional."),
    age_band: Optional[str] = typer.Option(None, "--age-band", help="Optional: under-18, 18-29, 30-44, 45-59, 60-74, 75+."),
    consent: Optional[bool] = typer.Option(None, "--consent/--no-consent", help="The volunteer agreed (or refused) to the consent text (see --show-consent)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="No keyboard: answers come from options, consent is given (unless --no-consent), every prompt is recorded in turn."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", help="Negative prompts file (one a line; 'confusable:'/'sentence:' prefixes) instead of the shipped list."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue an interrupted session (its folder name)."),
    session_id: Optional[str] = typer.Option(None, "--session", help="Name of a new session (default: rec-<UTC time>-<speaker>)."),
    max_seconds: float = typer.Option(4.0, "--max-seconds", min=0.5, help="Longest take; a take also ends when the speaker stops."),
    trailing_silence: float = typer.Option(0.8, "--trailing-silence", min=0.2, help="Silence after speech that ends a take, seconds."),
    countdown: Optional[float] = typer.Option(None, "--countdown", min=0, help="Seconds of countdown before each take (default: 2, or 0 with --yes)."),
    retries: int = typer.Option(2, "--retries", min=0, help="With --yes: re-takes of a prompt that fails a check before it is skipped."),
    seed: Optional[int] = typer.Option(None, help="Seed of the prompt order (default: from the session id)."),
    show_consent: bool = typer.Option(False, "--show-consent", help="Print the consent text and exit."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the end-of-session summary as JSON."),
) -> None:
    """Record a volunteer: consent first, then take by take with checks; every kept take is saved at once.

    Keys on screen: space record, p play, r redo previous, b previous bad, s skip, q quit.
    Interrupted (Ctrl-C, crash, unplugged microphone)? Earlier takes are safe: continue with --resume SESSION.
    """
    from rich.console import Console

    from collect import record as rec
    from collect.durable import check_writable
    from collect.mic import Microphone
    from features.errors import ConfigError, DeviceError, KwsError

    if show_consent:
        typer.echo(f"[{rec.CONSENT_VERSION}]\n{rec.CONSENT_TEXT}")
        return
    interactive = not yes and sys.stdin.isatty() and sys.stdout.isatty()
    console = Console(stderr=False)
    say = typer.echo
    created_dataset = not dataset.exists()
    check_writable(dataset)  # before any question: a take that cannot be saved must not be asked for
    if age_band and age_band not in rec.AGE_BANDS:  # "" means "not given" (and is not asked)
        raise ConfigError(f"--age-band {age_band!r}: use one of {', '.join(rec.AGE_BANDS)}")

    session = None
    if resume:
        session = rec.Session.resume(dataset, resume)
        device = device if device is not None else session.device
        mic = Microphone(device, device_rate)
        if not session.remaining():
            say(f"session {session.id} is complete: nothing left to record")
            say(rec.summary_text(rec.summary(session), session.keyword))
            return
        say(f"resuming session {session.id}: {len(session.rows())} takes kept, {len(session.remaining())} to record")
    else:
        if not keyword:
            raise ConfigError("give the wake word with --keyword (or continue a session with --resume SESSION)")
        mic = Microphone(device, device_rate)  # an unknown device fails here, before the volunteer is asked anything
        suggested = rec.next_speaker_id(dataset)
        if interactive:
            from collect.tui import ask_speaker

            speaker, accent, gender, age_band = ask_speaker(console, suggested, rec.known_accents(dataset), speaker,
                                                            accent, gender, age_band, rec.AGE_BANDS)
        else:
            if speaker is None:
                speaker = suggested
                say(f"speaker id: {speaker} (next free)")
            if not accent:
                raise ConfigError("--accent is required without a keyboard (free text, e.g. en-GB-scotland)")
        gender, age_band = (gender or "").strip() or None, (age_band or "").strip() or None
        speaker = rec.check_speaker_id(speaker)
        if speaker in rec.known_speakers(dataset):
            say(f"note: speaker {speaker} already has recordings in {dataset}; this session adds to them")
        if consent is None and interactive:
            from collect.tui import ask_consent

            consent = ask_consent(console, rec.CONSENT_TEXT, speaker)
        elif consent is None:
            consent = yes
        if not consent:
            if created_dataset:
                try:
                    dataset.rmdir()
                except OSError:
                    pass
            say("no consent given: nothing was recorded")
            raise typer.Exit(1)
        settings = {"takes": takes, "negatives": negatives, "max_seconds": max_seconds, "prompts_file": str(prompts) if prompts else None,
                    "trailing_silence_s": trailing_silence}
        sid = session_id or rec.new_session_id(speaker)
        prompt_list = rec.plan_prompts(keyword, takes, negatives, seed if seed is not None else _seed_of(sid), prompts)
        settings["seed"] = seed if seed is not None else _seed_of(sid)
        session = rec.Session.create(dataset, keyword, prompt_list, rec.Speaker(speaker, accent.strip(), gender, age_band),
                                     mic.name, settings, session_id=sid)
        session.record_consent(speaker)
        say(f"session {session.id}: {len(prompt_list)} prompts, device {mic.name!r} at {mic.rate} Hz"
            + (" (resampled to 16000 Hz)" if mic.rate != 16000 else ""))

    if countdown is None:
        countdown = 0.0 if not interactive else 2.0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    result = None
    try:
        with mic:
            if interactive:
                from collect.tui import TerminalFrontend

                frontend = TerminalFrontend(mic, max_seconds, console)
                with frontend.running():
                    result = rec.run_session(session, mic, frontend, max_seconds, countdown, trailing_silence, output_device)
            else:
                result = rec.run_session(session, mic, rec.ScriptedFrontend(retries, print_fn=_print_flush), max_seconds,
                                         countdown, trailing_silence, output_device)
    except KeyboardInterrupt:
        session.close()
        print(f"kws: interrupted: the take in progress was dropped; {len(session.rows())} takes are saved in {session.dir}; "
              f"continue with: kws record {dataset} --resume {session.id}", file=sys.stderr)
        raise typer.Exit(130)
    except DeviceError as exc:
        session.close()
        raise DeviceError(f"{exc}; continue with: kws record {dataset} --resume {session.id}") from None
    except KwsError:
        session.close()
        raise
    session.close()
    summary = rec.summary(session, result)
    say(rec.summary_text(summary, session.keyword))
    if result is not None and result.quit and summary["remaining"]:
        say(f"continue later with: kws record {dataset} --resume {session.id}")
    if json_out:
        json_out.write_text(json.dumps(summary, indent=2))


def _seed_of(session_id: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:4], "little")


def _print_flush(text: str) -> None:
    print(text, flush=True)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
