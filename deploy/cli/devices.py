"""``kws devices``: the audio inputs ``kws listen --device`` can open, with their default rates."""

from __future__ import annotations

import typer

from deploy.cli.app import app


@app.command()
def devices() -> None:
    """List audio input devices (index, name, host API, channels, default rate; * marks the default)."""
    from features.devices import list_devices

    found = list_devices()
    if not found:
        typer.echo("no audio input devices found (is a microphone connected, or a sound server running?)", err=True)
        raise typer.Exit(1)
    width = max(len(d.name) for d in found)
    typer.echo(f"  {'index':>5}  {'name':<{width}}  {'host API':<10}  {'channels':>8}  {'default rate':>12}")
    for d in found:
        mark = "*" if d.is_default else " "
        typer.echo(f"{mark} {d.index:>5}  {d.name:<{width}}  {d.hostapi:<10}  {d.channels:>8}  {d.default_rate:>9.0f} Hz")
    typer.echo("listen with: kws listen MODEL --device <index or name>")
