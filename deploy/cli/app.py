"""The ``kws`` Typer application object that every subcommand module registers on."""

import typer

app = typer.Typer(
    name="kws",
    help="Wake-word spotting: synthesise or record clips, train, export to ONNX, detect, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
