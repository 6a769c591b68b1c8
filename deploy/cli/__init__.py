"""The ``kws`` command line: one small module per subcommand, each a thin layer over a library function.

``main`` turns every ``KwsError`` into a one-line message on stderr and exit
status 2, without a traceback; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import logging
import sys

from features.errors import KwsError
from deploy.cli.app import app

# Each import registers its subcommand(s) on ``app``.
from deploy.cli import (  # noqa: F401,E402
    record,
    synth,
    data,
    train,
    tune,
    mine,
    export,
    evaluate,
    detect,
    listen,
    devices,
    bench,
    demo,
)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except KwsError as exc:
        print(f"kws: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("kws: interrupted", file=sys.stderr)
        sys.exit(130)
