"""``kws data``: check a dataset's rows against its files and count clips per label, accent and speaker."""

import json
from pathlib import Path
from typing import Optional

import typer

from deploy.cli.app import app


@app.command()
def data(
    dataset: Path = typer.Argument(..., help="Dataset folder (the union of its */manifest.jsonl)."),
    speakers: bool = typer.Option(False, "--speakers", help="Also list clips per speaker."),
    no_sha: bool = typer.Option(False, "--no-sha", help="Skip the sha256 check (faster on large datasets)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the counts and problems as JSON."),
) -> None:
    """Validate every row (file exists, readable, duration, sample rate, sha256) and print counts.

    Exits with status 1 if any row or manifest line is bad; all of them are listed.
    """
    from collect.datacheck import check_dataset

    report = check_dataset(dataset, verify_sha256=not no_sha, progress=True)
    typer.echo(report.to_text(per_speaker=speakers))
    if json_out:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if report.problems:
        raise typer.Exit(1)
