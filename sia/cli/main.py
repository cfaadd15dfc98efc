"""The command group, its shared options and error translation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sia.errors import Interrupted
from sia.workspace import DEFAULT_WORKSPACE, Workspace
from statemachine.errors import SiaError

__all__ = [
    "OneLineUsageError",
    "cli",
    "emit_json",
    "open_workspace",
    "parse_iterations",
    "pass_workspace",
]


class OneLineUsageError(click.ClickException):
    """A usage mistake (a bad option value, a missing argument), told in one line like every
    other error; exit code 2, as click gives it."""

    exit_code = 2


class SiaGroup(click.Group):
    """Turns every :class:`SiaError` into a one-line ``ClickException`` and every usage error
    of a subcommand into a one-line :class:`OneLineUsageError`; an interrupted run prints
    where it stopped and exits 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"Interrupted: {exc}", err=True)
            ctx.exit(130)  # the shell's code for "ended by SIGINT"
        except SiaError as exc:
            raise click.ClickException(str(exc)) from exc
        except click.UsageError as exc:
            # click would print the usage block first, which buries the one line that
            # matters; the help is one flag away, and the line says which.
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            raise OneLineUsageError(f"{exc.format_message()} (see `{where} --help`)") from exc


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
