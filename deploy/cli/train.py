"""``kws train``: train a keyword classifier on a dataset folder and write a run folder."""

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.json"


@app.command()
def train(
    dataset: Path = typer.Argument(..., help="Dataset folder (its */manifest.jsonl files list the clips)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Training config JSON (default: configs/default.json)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<dataset>-<date-time>)."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed (splits, initialisation, augmentation)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Override the config's maximum number of epochs."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="Start from this run's best.pt (fine-tuning, e.g. after kws mine)."),
    fine_tuned_share: Optional[float] = typer.Option(
        None, help="With --init-from: also write interpolated.pt, this share of the fine-tuned weights and the rest of the "
                   "starting ones (0.5: halfway; train/interpolate.py)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train with speaker-disjoint validation and early stopping; writes best.pt, metrics, curve and data digest."""
    from features.errors import ConfigError
    from train.config import TrainConfig
    from train.loop import train as run_training

    if fine_tuned_share is not None and not (init_from and 0.0 <= fine_tuned_share <= 1.0):
        raise ConfigError("--fine-tuned-share needs --init-from (the model fine-tuned from) and a share in [0, 1], "
                          f"got {fine_tuned_share} {'with' if init_from else 'without'} --init-from")
    cfg = TrainConfig.from_file(config or DEFAULT_CONFIG)
    changes = {k: v for k, v in {"seed": seed, "epochs": epochs, "init_from": init_from and str(init_from)}.items() if v is not None}
    if changes:
        cfg = cfg.replace(**changes)
    if out is None:
        out = Path("runs") / f"{dataset.resolve().name}-{datetime.now():%Y%m%d-%H%M%S}"
    result = run_training(dataset, cfg, out, progress=progress)
    v = result.val_metrics
    typer.echo(f"run: {result.run_dir}")
    typer.echo(f"checkpoint: {result.checkpoint} (epoch {result.best_epoch} of {result.epochs_run}, {result.seconds:.0f} s)")
    typer.echo(
        f"validation ({v['n']} clips of held-out speakers): accuracy {v['accuracy']:.3f}, keyword F1 {v['f1']:.3f}, "
        f"false accepts {v['far']:.3f}, keyword recall {v['recall_at_far']:.3f} at {cfg.far_target:.0%} false accepts"
    )
    weak = [(a, d["keyword_recall"]) for a, d in v.get("per_accent", {}).items()
            if d["keyword_recall"] is not None and d["keyword_recall"] < 0.9]
    if weak:
        typer.echo("accents with validation keyword recall below 90%: " + ", ".join(f"{a} ({r:.0%})" for a, r in sorted(weak)))
    final = result.checkpoint
    if fine_tuned_share is not None:
        from train.interpolate import interpolate

        final = result.run_dir / "interpolated.pt"
        interpolate(init_from, result.checkpoint, fine_tuned_share, final)
        typer.echo(f"interpolated: {final} ({fine_tuned_share:g} of the fine-tuned weights, {1 - fine_tuned_share:g} of {init_from})")
    typer.echo(f"export it with: kws export {final}")
