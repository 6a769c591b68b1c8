"""``kws tune``: search training settings with speaker-grouped cross-validation; write a results table and the best config."""

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def tune(
    dataset: Path = typer.Argument(..., help="Dataset folder (its */manifest.jsonl files list the clips)."),
    space: Path = typer.Option(..., "--space", "-s", help="Search space JSON: a base training config and the settings to vary (see configs/tune-space.json)."),
    mode: str = typer.Option("grid", help="grid (every combination of the listed choices) or random (--trials draws; lists and distributions)."),
    trials: int = typer.Option(10, min=1, help="Random mode: how many configurations to draw."),
    folds: int = typer.Option(3, min=2, help="Cross-validation folds; each holds out its own speakers for validation."),
    seed: int = typer.Option(0, help="Seed of the random draws and of the speaker folds (training keeps the config's seed)."),
    metric: str = typer.Option("recall_at_far", help="What ranks trials: recall_at_far (at the config's far_target), f1, accuracy or loss."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder (default: runs/tune-<dataset>-<date-time>); rerun into it to resume."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Try configs on speaker folds (test speakers never used); writes results.json/.md/.csv/.png and best_config.json."""
    from train.tune import load_space, tune as run_tune

    search = load_space(space)
    if out is None:
        out = Path("runs") / f"tune-{dataset.resolve().name}-{datetime.now():%Y%m%d-%H%M%S}"
    result = run_tune(dataset, search, out, mode=mode, n_trials=trials, seed=seed, n_folds=folds, metric=metric,
                      progress=progress)
    table = (result.out_dir / "results.md").read_text(encoding="utf-8")
    typer.echo(table[table.index("| rank"):].rstrip())
    reused = sum(1 for t in result.trials if t.get("reused"))
    if reused:
        typer.echo(f"({reused} trial(s) reused from the earlier results in {result.out_dir})")
    typer.echo(f"results: {result.out_dir}/results.md (+ results.json, results.csv, results.png)")
    typer.echo(f"best config: {result.out_dir / 'best_config.json'}")
    typer.echo(f"train it with: kws train {dataset} --config {result.out_dir / 'best_config.json'}")
