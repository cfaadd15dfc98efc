"""The ``sia`` command: a thin click layer over the library.

Every library error becomes one line on stderr and a non-zero exit; ``--json`` on every
read command prints machine-readable output instead of tables.
"""

from __future__ import annotations

# Each module registers its commands on ``cli`` when imported.
from sia.cli import (  # noqa: F401
    bisect,
    catalog,
    episodes,
    evaluate,
    experiment,
    export,
    read,
    report,
    why,
    worker,
    write,
)
from sia.cli.main import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="sia")
