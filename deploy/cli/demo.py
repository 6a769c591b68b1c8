"""``kws demo``: the whole pipeline on the built-in default (see ``deploy.demo``)."""

from pathlib import Path

import typer

from deploy.cli.app import app


@app.command()
def demo(
    phrase: str = typer.Argument("computer", help="Wake word or phrase to build a detector for."),
    recordings: Path = typer.Option(Path("recordings"), help="Folder the synthetic dataset goes into (as recordings/<phrase>)."),
    runs: Path = typer.Option(Path("runs"), help="Folder the training run, model and reports go into (as runs/demo-<phrase>)."),
    scale: str = typer.Option("default", help="'default' (about 6 minutes on 2 cores) or 'tiny' (a smoke test)."),
    seed: int = typer.Option(0, help="Seed for synthesis, splits, training and evaluation streams."),
) -> None:
    """Synthesise, train, export, evaluate per accent and stream a demo WAV, in one go."""
    from deploy.demo import SCALES, run_demo
    from features.errors import ConfigError

    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    result = run_demo(phrase, recordings=recordings, runs=runs, scale=scale, seed=seed, echo=typer.echo)
    report, stream = result.report, result.report["stream"]
    typer.echo("\n== done ==")
    typer.echo(f"time taken      {result.seconds['total'] / 60:.1f} min (" + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items() if k != "total") + ")")
    typer.echo(f"dataset         {result.dataset}")
    typer.echo(f"training run    {result.run_dir / 'train'}")
    typer.echo(f"model           {result.model}")
    typer.echo(f"model card      {result.card}")
    typer.echo(f"report          {result.eval_dir / 'report.md'} (+ report.json, det.png, accent_frr.png, confusion.png)")
    typer.echo(f"demo stream     {result.demo_wav}: {len(result.detections)} detections for {len(result.true_times)} spoken keywords")
    typer.echo(
        f"headline        FRR {100 * stream['frr']:.1f}% at {stream['fa_per_hour']:.2f} false accepts/hour "
        f"on {stream['background_hours'] * 60:.0f} min of background; clip F1 {report['clips']['f1']:.3f}"
    )
    typer.echo("per accent FRR  " + ", ".join(f"{a} {100 * r['frr']:.0f}%" for a, r in sorted(report["per_accent"].items())))
