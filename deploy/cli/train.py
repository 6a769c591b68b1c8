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
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train with speaker-disjoint validation and early stopping; writes best.pt, metrics, curve and data digest."""
    from train.config import TrainConfig
    from train.loop import train as run_training

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
    typer.echo(f"export it with: kws export {result.checkpoint}")
