"""The command group, its shared options and error translation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sia.errors import Interrupted
from sia.workspace import DEFAULT_WORKSPACE, Workspace
from statemachine.errors import SiaError

__all__ = ["cli", "emit_json", "open_workspace", "parse_iterations", "pass_workspace"]


class SiaGroup(click.Group):
    """Turns every :class:`SiaError` into a one-line ``ClickException``; an interrupted
    run prints where it stopped and exits 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"Interrupted: {exc}", err=True)
            ctx.exit(130)  # the shell's code for "ended by SIGINT"
        except SiaError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=SiaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_WORKSPACE,
    show_default=True,
    envvar="SIA_WORKSPACE",
    help="Folder holding the ledger, harness repo and artifacts.",
)
@click.version_option(package_name="sia")
@click.pass_context
def cli(ctx: click.Context, workspace: Path) -> None:
    """SIA: a self-improving agent loop with a history you can audit.

    \b
    Example:
        sia run --task arith --mode h --iterations 3
        sia status
        sia replay <run>
    """
    ctx.obj = workspace


pass_workspace = click.make_pass_decorator(Path)


def open_workspace(root: Path) -> Workspace:
    return Workspace.open(root)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def parse_iterations(text: str | None) -> list[int] | None:
    """``--iterations``: ``all`` (``None``) or comma-separated numbers like ``0,2,4``."""
    if text is None or text == "all":
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SiaError(f"--iterations takes 'all' or numbers like 0,2,4, not {text!r}") from None
