"""What SIA can run on: the registered policy models (``sia models``) and tasks (``sia tasks``).

These commands need no workspace; they read the model cache and the task registry only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Task as BarTask
from rich.table import Table
from rich.text import Text

from sia.cli.main import SiaGroup, cli, emit_json
from sia.models import (
    DEFAULT_MODEL,
    ModelInfo,
    ProgressCallback,
    ProgressEvent,
    model_path,
    resolve,
)
from sia.models import list_models as registered_models
from tasks import SPLITS, Task, TaskCheckFailed, check_task, get_task
from tasks import list_tasks as registered_tasks
from tasks.registry import PACKAGE_PREFIX
from tasks.siadir import PACKAGE_TASKS, fetch_package_tasks
from tasks.siadir.package import package_tasks_cached

__all__ = ["models", "tasks"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed the task's splits are drawn from."
)


# --- models -------------------------------------------------------------------------------


@cli.group(cls=SiaGroup, invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The policy models SIA knows by name, and fetching them into the local cache.

    Without a subcommand, lists the models.

    \b
    Example:
        sia models list
        sia models fetch
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models_command)


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _model_row(info: ModelInfo) -> dict[str, Any]:
    spec = info.spec
    return {
        "name": spec.name,
        "default": spec.name == DEFAULT_MODEL,
        "description": spec.description,
        "license": spec.license,
        "params": spec.params,
        "source": spec.source,
        "cached": info.cached,
        "path": str(info.path) if info.path else None,
    }


@models.command("list")
@json_option
def list_models_command(as_json: bool) -> None:
    """List every registered model: licence, size, source, and whether it is cached.

    \b
    Example:
        sia models list --json
    """
    rows = [_model_row(info) for info in registered_models()]
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"registered models (default: {DEFAULT_MODEL})")
    for col in ("name", "params", "license", "cached"):
        table.add_column(col)
    table.add_column("source / path", overflow="fold", min_width=16)
    for r in rows:
        table.add_row(
            r["name"],
            _params(r["params"]),
            r["license"],
            "yes" if r["cached"] else "no",
            r["path"] or r["source"],
        )
    Console().print(table)


class _AmountColumn(ProgressColumn):
    """Bytes as a file size, anything else (tensors, steps) as a plain count."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes, self._count = DownloadColumn(), MofNCompleteColumn()

    def render(self, task: BarTask) -> Text:
        column = self._bytes if task.fields.get("unit") == "B" else self._count
        return column.render(task)


class _SpeedColumn(TransferSpeedColumn):
    """A transfer speed for byte stages only; a tensor rate would mean little."""

    def render(self, task: BarTask) -> Text:
        return super().render(task) if task.fields.get("unit") == "B" else Text("")


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressCallback | None]:
    """A callback drawing one bar per stage on stderr, so ``--json`` stdout stays parseable."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description:<9}"),
        BarColumn(),
        _AmountColumn(),
        _SpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    stages: dict[str, TaskID] = {}

    def on_event(event: ProgressEvent) -> None:
        if event.stage not in stages:
            stages[event.stage] = bar.add_task(event.stage, total=event.total, unit=event.unit)
        bar.update(stages[event.stage], completed=event.done, total=event.total)

    with bar:
        yield on_event


@models.command()
@click.argument("name", default=DEFAULT_MODEL)
@click.option("--quiet", "-q", is_flag=True, help="Draw no progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fetch(name: str, quiet: bool, as_json: bool) -> None:
    """Fetch a registered model into the local cache (default: the embedded model).

    Does nothing but print the path if the model is already cached. The progress bar goes
    to stderr; with --json, stdout holds only the result.

    \b
    Example:
        sia models fetch
        sia models fetch smollm2-135m-instruct --quiet --json
    """
    spec = resolve(name)  # an unknown name fails here, before any bar is drawn
    info = {i.spec.name: i for i in registered_models()}.get(spec.name)
    # A local directory resolves to a fresh spec, even one named like a registered model.
    if info is None or info.spec is not spec:
        status, path = "local", model_path(name, fetch=False)
    elif info.cached and info.path is not None:
        status, path = "cached", info.path
    else:
        with _progress_bar(not quiet) as progress:
            path = model_path(name, fetch=True, progress=progress)
        status = "fetched"
    if as_json:
        emit_json({"name": spec.name, "status": status, "path": str(path)})
    elif status == "cached":
        click.echo(f"{spec.name} is already cached: {path}")
    elif status == "local":
        click.echo(f"{spec.name} is a local model directory, nothing to fetch: {path}")
    else:
        click.echo(f"{spec.name} fetched: {path}")


# --- tasks --------------------------------------------------------------------------------


@cli.group(cls=SiaGroup)
def tasks() -> None:
    """The registered tasks: their splits, harness templates, and contract checks.

    \b
    Example:
        sia tasks list
        sia tasks show arith
        sia tasks check arith
    """


def _sizes(task: Task) -> dict[str, int]:
    return {split: len(task.item_ids(split)) for split in SPLITS}


def _summary(text: str) -> str:
    """The first sentence: descriptions are written for agents and run to a paragraph."""
    first = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return first.splitlines()[0] if first else ""


@tasks.command("list")
@json_option
def list_tasks_command(as_json: bool) -> None:
    """List every registered task with its split sizes and what it is.

    \b
    Example:
        sia tasks list --json
    """
    rows = []
    for task_id in registered_tasks():
        task = get_task(task_id)
        rows.append(_row(task.id, task))
    for name in PACKAGE_TASKS:
        task_name = f"{PACKAGE_PREFIX}{name}"
        rows.append(_row(task_name, get_task(task_name) if package_tasks_cached() else None))
    if as_json:
        emit_json(rows)
        return
    table = Table(title="tasks")
    for col in ("id", *SPLITS):
        table.add_column(col, no_wrap=True, justify="left" if col == "id" else "right")
    table.add_column("metric", overflow="fold")
    table.add_column("description", overflow="fold")
    for r in rows:
        sizes = [str(r["splits"][s]) if r["splits"] else "-" for s in SPLITS]
        table.add_row(r["id"], *sizes, r["metric"], _summary(r["description"]))
    Console().print(table)
    if not package_tasks_cached():
        Console().print("sia:* tasks come from the sia-agent wheel: `sia tasks fetch` gets them")


def _row(task_id: str, task: Task | None) -> dict[str, Any]:
    if task is None:
        return {
            "id": task_id,
            "splits": None,
            "metric": "evaluate.py's metric",
            "description": "A task of the sia-agent package, not fetched yet.",
        }
    return {
        "id": task_id,
        "splits": _sizes(task),
        "metric": task.metric,
        "description": task.description,
    }


@tasks.command("fetch")
def fetch_tasks() -> None:
    """Fetch the sia-agent package's tasks (GPQA, LawBench, LongCOT-Chess) into the cache.

    The wheel comes from PyPI with pip, is checked against its pinned sha256, and only its
    task folders are unpacked; the package itself is never installed or imported.

    \b
    Example:
        sia tasks fetch && sia tasks show sia:gpqa
    """
    path = fetch_package_tasks()
    click.echo(f"{', '.join(PACKAGE_PREFIX + n for n in PACKAGE_TASKS)} in {path}")


@tasks.command()
@click.argument("task_name")
@seed_option
@json_option
def show(task_name: str, seed: int, as_json: bool) -> None:
    """Describe a task: its splits, harness template and one item as a harness sees it.

    The item is the first train item's public input; answers are never shown.

    \b
    Example:
        sia tasks show arith
    """
    task = get_task(task_name, seed=seed)
    train_ids = task.item_ids("train")
    data = {
        "id": task.id,
        "seed": seed,
        "description": task.description,
        "splits": _sizes(task),
        "template": {path: len(body) for path, body in sorted(task.harness_template().items())},
        "item": task.public_item(train_ids[0]) if train_ids else None,
    }
    if as_json:
        emit_json(data)
        return
    console = Console()
    console.print(f"[bold]{data['id']}[/] (seed {seed})")
    console.print(data["description"], markup=False)
    console.print("splits: " + ", ".join(f"{s}={n}" for s, n in data["splits"].items()))
    table = Table(title="harness template")
    table.add_column("file")
    table.add_column("bytes", justify="right")
    for path, size in data["template"].items():
        table.add_row(path, str(size))
    console.print(table)
    if data["item"] is not None:
        console.print("public train item:")
        console.print_json(json.dumps(data["item"]))


@tasks.command()
@click.argument("task_name")
@seed_option
@json_option
def check(task_name: str, seed: int, as_json: bool) -> None:
    """Check a task against the task contract; exit 1 if it breaks any rule.

    Checks the id, split shape and determinism, disjoint splits, that public items leak no
    label, the reward range, and the harness template.

    \b
    Example:
        sia tasks check arith
    """
    task = get_task(task_name, seed=seed)
    if not as_json:
        # TaskCheckFailed carries every failure in one line; SiaGroup prints it and exits 1.
        names = check_task(task)
        for name in names:
            click.echo(f"ok  {name}")
        click.echo(f"{task.id}: all {len(names)} checks passed")
        return
    try:
        names = check_task(task)
    except TaskCheckFailed as exc:
        emit_json({"id": task.id, "ok": False, "checks": None, "error": str(exc)})
        raise SystemExit(1) from exc
    emit_json({"id": task.id, "ok": True, "checks": list(names), "error": None})
