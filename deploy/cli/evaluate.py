"""``kws eval``: evaluate an exported model per clip and per stream, broken down by accent (see ``deploy.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command("eval")
def eval_command(
    model: Path = typer.Argument(..., help="Exported model (kws export writes it)."),
    dataset: Path = typer.Argument(..., help="Dataset folder (its */manifest.jsonl list the clips)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for report.json, report.md and plots (default: eval/ beside the model)."),
    split: str = typer.Option("test", "--split", help="Speakers to evaluate: the model's 'test' or 'val' speakers, 'train', or 'all' rows (for a dataset the model never saw)."),
    background_minutes: float = typer.Option(20.0, "--background-minutes", min=0.01, help="Minutes of background speech and noise in the stream."),
    snr_db: float = typer.Option(10.0, "--snr-db", help="Level of the stream's noise bed below the keyword speech, dB."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stream layout and noise."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    top: int = typer.Option(10, "--top", help="How many of the worst misses and false accepts to cut out to WAV files under errors/."),
    context: float = typer.Option(0.5, "--context", help="Seconds of audio kept either side of each cut."),
    ci_target: float = typer.Option(5.0, "--ci-target", help="Half-width, in percentage points, of the per-accent FRR interval to plan speakers for."),
) -> None:
    """Evaluate MODEL on DATASET: clip metrics, FRR and false accepts per hour on a long stream, per accent; the worst
    errors cut out to listen to, the speakers each accent still needs, and what to record next; refresh the model card."""
    from deploy.evaluate import evaluate
    from deploy.report import ACCENT_HEADER, accent_rows, headline

    out = out or model.parent / "eval"
    report = evaluate(model, dataset, out, split=split, background_minutes=background_minutes, snr_db=snr_db, seed=seed,
                      progress=progress, top=top, context_s=context, ci_target=ci_target / 100)
    typer.echo(headline(report))
    for note in report["selection"].get("notes", []):
        typer.echo(f"note: {note}")
    rows = [ACCENT_HEADER] + [[str(c) for c in row] for row in accent_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    for p in report["operating_points"]:
        if p["threshold"] is not None:
            typer.echo(f"at <= {p['target_fa_per_hour']:g} FA/h: threshold {p['threshold']:.3f}, FRR {100 * p['frr']:.1f}%")
    if report["skipped"]:
        typer.echo(f"skipped {len(report['skipped'])} unreadable clip(s) or manifest line(s); listed in the report", err=True)
    e = report["errors"]
    typer.echo(f"worst errors cut to {e['folder']}: {len(e['stream_misses'])} misses, {len(e['stream_false_accepts'])} "
               f"false accepts of the stream; {len(e['clip_misses'])} missed and {len(e['clip_false_accepts'])} firing clips")
    if report["advice"]:
        typer.echo("what to record next:")
        for a in report["advice"]:
            typer.echo(f"  - {a['text']}")
    files = report["files"]
    typer.echo(f"report: {files['markdown']} (+ report.json, det.png, accent_frr.png, confusion.png, errors/ in {out})")
    typer.echo(f"model card: {files['model_card']}")
