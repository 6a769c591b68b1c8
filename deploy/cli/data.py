"""``kws data``: check a dataset (the default), ``kws data forget`` a speaker, ``kws data import`` clips from elsewhere.

``kws data DATASET`` keeps meaning ``kws data check DATASET``: the group
inserts ``check`` when its first argument is not one of its subcommands. (A
dataset folder literally named ``forget`` or ``import`` needs the explicit
``kws data check forget``.)
"""

import json
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from deploy.cli.app import app


class DefaultCheckGroup(TyperGroup):
    """A command group whose first argument, if it is not a subcommand, goes to ``check``."""

    default_command = "check"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


data_app = typer.Typer(
    cls=DefaultCheckGroup,
    help="Check a dataset (kws data DATASET), forget a speaker, or import clips recorded elsewhere.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command()
def check(
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


@data_app.command()
def forget(
    dataset: Path = typer.Argument(..., help="Dataset folder."),
    speaker: str = typer.Option(..., "--speaker", help="Speaker id whose clips and rows are removed (withdrawn consent)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
) -> None:
    """Remove a speaker's clips and manifest rows from every session, and say what was removed."""
    from collect.dataset_ops import forget_speaker

    report = forget_speaker(dataset, speaker, dry_run=dry_run)
    typer.echo(("dry run: " if dry_run else "") + report.to_text())


@data_app.command("import")
def import_(
    dataset: Path = typer.Argument(..., help="Dataset folder to add the clips to (as a new session)."),
    folder: Path = typer.Argument(..., help="Folder of clips: <label>/<file> without --metadata."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="CSV with columns path (relative to FOLDER), label, speaker, accent [, text, gender, age_band, kind]."),
    speaker: Optional[str] = typer.Option(None, "--speaker", help="Speaker id for clips the CSV does not give one."),
    accent: Optional[str] = typer.Option(None, "--accent", help="Accent for clips the CSV does not give one."),
    session: Optional[str] = typer.Option(None, "--session", help="Name of the new session (default: import-<folder>-<time>)."),
) -> None:
    """Convert clips recorded elsewhere to 16 kHz mono PCM-16 and add them with manifest rows.

    Every file that cannot be imported is listed with the reason; exits 1 if there was any.
    """
    from collect.dataset_ops import import_folder

    report = import_folder(dataset, folder, metadata, speaker=speaker, accent=accent, session=session)
    typer.echo(report.to_text())
    if report.refused:
        raise typer.Exit(1)
