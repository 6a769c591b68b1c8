"""``kws mine``: the windows a model wrongly fires on, from a dataset's negatives, written back as a negative session."""

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def mine(
    model: Path = typer.Argument(..., help="Exported model (.onnx)."),
    dataset: Path = typer.Argument(..., help="Dataset whose negative clips are searched; the mined session is written into it."),
    threshold: float = typer.Option(0.2, help="Keep windows whose raw keyword score reaches this."),
    max_clips: int = typer.Option(2000, min=1, help="At most this many windows, the highest-scoring first."),
    noise_snr_db: Optional[float] = typer.Option(
        None, help="Also stream every clip under pink noise this many dB below its speech power: false accepts a noisy room brings out."),
    session: Optional[str] = typer.Option(None, help="Name of the new session (default: mined-<date-time>)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Mine false accepts for the next training round (then: kws train DATASET --init-from RUN/best.pt)."""
    from collect.manifest import NEGATIVE, read_dataset
    from deploy.mine import find_false_accepts, write_mined
    from deploy.modelfile import KwsModel
    from features.audio import load_audio
    from features.errors import ConfigError

    kws_model = KwsModel(model)
    rows, _ = read_dataset(dataset)
    rows = [r for r in rows if r.label == NEGATIVE]
    if not rows:
        raise ConfigError(f"{dataset}: no negative clips to mine")
    found = find_false_accepts(kws_model, [(r, load_audio(dataset / r.path)) for r in rows], threshold=threshold,
                               noise_snr_db=noise_snr_db, progress=progress)
    if not found:
        typer.echo(f"no window of {len(rows)} negative clips reaches {threshold}: nothing to mine")
        return
    manifest = write_mined(dataset, found, max_clips=max_clips, session=session or f"mined-{datetime.now():%Y%m%d-%H%M%S}")
    typer.echo(f"{min(len(found), max_clips)} windows (of {len(found)} at or above {threshold}) from {len(rows)} negative clips: {manifest}")
    typer.echo(f"fine-tune with: kws train {dataset} --init-from RUN/best.pt --epochs 8")
