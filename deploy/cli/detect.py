"""``kws detect``: the streaming detector over audio files, with every hop's score as CSV if asked.

The files go through exactly the code the microphone uses (``Detector.update``
in chunks of ``--chunk`` samples), so what ``kws detect`` finds in a recording
is what ``kws listen`` would have found live.

``--scores OUT.csv`` holds each hop's raw (unsmoothed) model score, so any
threshold and smoothing can be replayed later without running the model
(``deploy.detector.smooth`` and ``fire_indices``). Columns:

- ``time_s``: stream time of the hop, the end of the scored window, seconds;
- ``score`` for a one-keyword model, else ``score_<keyword>`` for each keyword;
- with several FILEs, a first column ``file`` (times restart at 0 for each
  file), so one CSV holds them all; with one FILE the header is exactly
  ``time_s,score``.

Files that cannot be used (missing, unreadable, empty, silent) are reported
one line each on stderr and the others are processed; the exit status is 1
if any file failed.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


def score_columns(keywords: tuple[str, ...] | list[str]) -> list[str]:
    """CSV column names of the scores: ``score`` for one keyword, ``score_<keyword>`` for several."""
    return ["score"] if len(keywords) == 1 else [f"score_{k}" for k in keywords]


@app.command()
def detect(
    model: Path = typer.Argument(..., help="Exported model (kws export writes it)."),
    files: list[Path] = typer.Argument(..., help="Audio files; anything soundfile reads is converted to 16 kHz mono."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Detection threshold (default: the model's)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Write every hop's score to this CSV (header time_s,score)."),
    chunk: int = typer.Option(1600, min=1, help="Samples fed to the detector at a time, as a microphone would (results do not depend on it)."),
) -> None:
    """Run the streaming detector over files; print each detection (file, time, keyword, score)."""
    from deploy.detector import Detector
    from deploy.modelfile import KwsModel
    from features.audio import load_audio
    from features.errors import KwsError

    kws_model = KwsModel(model)
    detector = Detector(kws_model, threshold=threshold, record_scores=scores is not None)
    info = kws_model.info
    rate = info.feature_config.sample_rate
    several = len(files) > 1
    rows: list[list[str]] = []
    failed: list[Path] = []
    n_detections = 0
    for path in files:
        try:
            audio = load_audio(path, sample_rate=rate)
        except KwsError as exc:
            typer.echo(f"kws: error: {exc}", err=True)
            failed.append(path)
            continue
        detections = detector.process(audio, chunk_size=chunk)
        for d in detections:
            typer.echo(f"{path}\t{d.time_s:8.3f} s\t{d.keyword}\t{d.score:.3f}")
        if not detections:
            typer.echo(f"{path}\t(no detection in {len(audio) / rate:.1f} s)")
        n_detections += len(detections)
        if scores is not None:
            prefix = [str(path)] if several else []
            for t, s in zip(detector.times, detector.scores):
                rows.append(prefix + [f"{t:.4f}"] + [f"{float(v):.6f}" for v in s])
    if scores is not None:
        scores.parent.mkdir(parents=True, exist_ok=True)
        with open(scores, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow((["file"] if several else []) + ["time_s"] + score_columns(info.keywords))
            writer.writerows(rows)
    done = len(files) - len(failed)
    summary = f"{n_detections} detection{'s' if n_detections != 1 else ''} in {done} file{'s' if done != 1 else ''}"
    summary += f" (threshold {detector.threshold:g})"
    if scores is not None:
        summary += f"; scores: {scores} ({len(rows)} hops)"
    typer.echo(summary, err=True)
    if failed:
        typer.echo(f"kws: {len(failed)} of {len(files)} files failed", err=True)
        raise typer.Exit(1)
