"""``kws listen``: the detector on a live microphone until Ctrl-C (or ``--duration``).

Ctrl-C is the normal way to stop: the stream is closed and a short summary is
printed, with exit status 0 and no traceback. Device problems are one-line
``DeviceError`` messages naming the device.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def listen(
    model: Path = typer.Argument(..., help="Exported model (kws export writes it)."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Input device: index or (part of) its name; see 'kws devices' (default: the system default input)."),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Detection threshold (default: the model's)."),
    duration: Optional[float] = typer.Option(None, min=0.0, help="Stop after this many seconds of audio (default: until Ctrl-C)."),
) -> None:
    """Listen on a microphone and print each detection with the wall-clock time and its score."""
    from deploy.listener import Listener

    listener = Listener(model, device, threshold=threshold)
    detector = listener.detector
    keywords = ", ".join(detector.keywords)
    typer.echo(f"listening on {listener.describe()} for {keywords} (threshold {detector.threshold:g}) ... Ctrl-C to stop")

    def show(d) -> None:
        now = datetime.now().strftime("%H:%M:%S")
        typer.echo(f"{now}  {d.keyword}  score {d.score:.3f}  (at {d.time_s:.2f} s)")

    detections = listener.run(on_detection=show, duration_s=duration)
    how = "stopped (Ctrl-C)" if listener.interrupted else "stopped"
    summary = f"{how} after {listener.seconds:.1f} s of audio: {len(detections)} detection{'s' if len(detections) != 1 else ''}"
    if listener.overflows or listener.dropped:
        summary += f"; input lost: {listener.overflows} overflowed and {listener.dropped} dropped blocks"
    typer.echo(summary)
