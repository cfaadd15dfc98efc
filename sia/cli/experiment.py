"""`sia experiment`: every (mode, seed) of a task as its own run, and the table comparing
the modes on the test split. Importing this module registers the command."""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sia.cli.integrity import check_readable
from sia.cli.live import RunView
from sia.cli.main import cli, pass_workspace
from sia.cli.options import COUNT, POSITIVE, SECONDS, TEMPERATURE, agent_options
from sia.config import BACKENDS
from sia.errors import Interrupted, SiaError
from sia.experiment import (
    MODES,
    ExperimentReport,
    ExperimentSpec,
    PlannedRun,
    RunNotice,
    describe,
    format_stat,
    run_experiment,
)
from sia.stopping import stop_signals
from sia.workspace import Workspace
from tasks import get_task
from tasks.registry import DIR_PREFIX

__all__ = ["experiment"]


def _modes(text: str) -> tuple[str, ...]:
    modes = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise SiaError(f"--modes takes some of {','.join(MODES)}, comma-separated, not {text!r}")
    return modes


def _default_name(task: str) -> str:
    name = Path(task.removeprefix(DIR_PREFIX)).name if task.startswith(DIR_PREFIX) else task
    return name.replace(":", "-")


def _table(report: ExperimentReport) -> Table:
    table = Table(title=f"experiment {report.spec.name}", caption=describe(report.spec))
    table.add_column("method")
    table.add_column("test (mean ± std)", justify="right")
    table.add_column("seeds", justify="right")
    table.add_column("per seed")
    for row in report.rows:
        cells = [f"{r.test:.3f}" if r.test is not None else r.status for r in row.runs]
        table.add_row(
            row.label, format_stat(row.stat), f"{row.stat.n}/{len(row.runs)}", ", ".join(cells)
        )
    return table


def _notify(console: Console):
    def notify(notice: RunNotice) -> None:
        where = f"[{notice.index + 1}/{notice.total}] {notice.planned.run_id}"
        result = notice.result
        if notice.action == "skip":
            console.print(f"{where}: {result.status}, skipped")
        elif notice.action == "end":
            test = "-" if result.test is None else f"{result.test:.3f}"
            console.print(f"{where}: {result.status}, test {test}")
        else:
            console.print(f"{where}: {notice.action} (mode {notice.planned.mode})")

    return notify


def _display(console: Console, quiet: bool):
    def display(planned: PlannedRun) -> AbstractContextManager[RunView]:
        return RunView(console, planned.config.budget.iterations, quiet=quiet)

    return display


@cli.command()
@click.option("--task", default="arith", show_default=True, help="Task id (see `sia tasks`).")
@click.option(
    "--task-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A SIA-format task directory instead of --task.",
)
@click.option(
    "--modes",
    default="base,h,w+h",
    show_default=True,
    help="Rows of the table, comma-separated: base (initial harness, no iteration), h, w, w+h.",
)
@click.option(
    "--seeds",
    type=POSITIVE,
    default=3,
    show_default=True,
    help="Runs per mode, seeds 0 … N-1.",
)
@click.option(
    "--name", default=None, help="Experiment name, prefix of its run ids [default: the task]."
)
@click.option(
    "--iterations", type=COUNT, default=3, show_default=True, help="Iteration budget per run."
)
@click.option("--wall-seconds", type=SECONDS, default=None, help="Wall-time budget per run.")
@click.option("--tokens", type=POSITIVE, default=None, help="Policy token budget per run.")
@click.option(
    "--batch-size", type=POSITIVE, default=16, show_default=True, help="Items per rollout."
)
@click.option(
    "--group-size",
    type=POSITIVE,
    default=None,
    help="Episodes per item in a rollout [default: 1 in mode h, 4 when training].",
)
@click.option(
    "--rollout-temperature",
    type=TEMPERATURE,
    default=None,
    help="Temperature forced on rollout calls [default: the harness's in mode h, else 1.0].",
)
@click.option("--lora-rank", type=POSITIVE, default=8, show_default=True, help="Rank of adapters.")
@click.option("--algorithm", default=None, help="Force one RL algorithm for every TRAIN.")
@click.option(
    "--train-device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where adapters train (auto: cuda when present).",
)
@click.option(
    "--policy",
    default="smollm2-135m-instruct",
    show_default=True,
    help="Policy model (see `sia models`).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="hf",
    show_default=True,
    help="Policy backend, as for `sia run` (openai runs modes base and h only).",
)
@click.option("--endpoint", default=None, help="API root with /v1 (openai, vllm).")
@click.option(
    "--api-key-env", default=None, help="Environment variable holding the endpoint's key."
)
@agent_options
@click.option("--quiet", is_flag=True, help="No progress display; only the final table.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the table as JSON on stdout (progress on stderr).",
)
@pass_workspace
def experiment(
    root: Path,
    task: str,
    task_dir: Path | None,
    modes: str,
    seeds: int,
    name: str | None,
    iterations: int,
    wall_seconds: float | None,
    tokens: int | None,
    batch_size: int,
    group_size: int | None,
    rollout_temperature: float | None,
    lora_rank: int,
    algorithm: str | None,
    train_device: str,
    policy: str,
    backend: str,
    endpoint: str | None,
    api_key_env: str | None,
    meta_agent: str,
    feedback_agent: str,
    agent_model: str,
    agent_base_url: str | None,
    agent_api_key_env: str,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run every (mode, seed) as its own named run and compare the modes on the test split.

    Runs are named NAME-MODE-sSEED (w+h as wh). Running the same command again skips
    finished runs, resumes interrupted ones and refuses if the runs were made with other
    options. The table (mean ± sample std over seeds of each run's test score of its
    val-selected candidate) is recomputed from the ledger and saved as
    experiments/NAME.md, .json (with the definition and per-seed scores) and .svg.

    \b
    Examples:
        sia experiment --task arith --modes base,h,w+h --seeds 3 --iterations 3 --batch-size 8
        sia experiment --modes base,w --seeds 2 --iterations 1 --name quick --json
    """
    if task_dir is not None:
        task = f"{DIR_PREFIX}{task_dir.expanduser().resolve()}"
    get_task(task, seed=0)  # a bad task name or task dir is refused before anything is written
    spec = ExperimentSpec(
        name=name or _default_name(task),
        modes=_modes(modes),
        seeds=tuple(range(seeds)),
        options={
            "task": task,
            "budget": {
                "iterations": iterations,
                "wall_seconds": wall_seconds,
                "tokens": tokens,
                "target_score": None,
            },
            "batch_size": batch_size,
            "group_size": group_size,
            "rollout_temperature": rollout_temperature,
            "lora_rank": lora_rank,
            "lora_alpha": 2 * lora_rank,
            "algorithm": algorithm,
            "train_device": train_device,
            "policy": policy,
            "backend": backend,
            "endpoint": endpoint,
            "api_key_env": api_key_env,
            "meta_agent": meta_agent,
            "feedback_agent": feedback_agent,
            "agent_model": agent_model,
            "agent_base_url": agent_base_url,
            "agent_api_key_env": agent_api_key_env,
        },
    )
    check_readable(Workspace(root))  # a damaged ledger is refused before anything is written
    console = Console(stderr=as_json, quiet=quiet)
    try:
        # SIGTERM stops it like Ctrl-C: the run is recorded as interrupted, resumable.
        with stop_signals() as stop:
            report = run_experiment(
                root,
                spec,
                display=_display(console, quiet),
                notify=_notify(console),
                stop_requested=stop.requested,
            )
    except Interrupted as exc:
        raise Interrupted(f"{exc}; or run this experiment command again") from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        Console(quiet=quiet).print(_table(report))
        console.print(f"saved {report.files['md']}, {report.files['json']}, {report.files['svg']}")
    failed = [r.run_id for r in report.unfinished]
    if failed:
        raise click.ClickException(
            f"{len(failed)} run(s) did not finish: {', '.join(failed)} (see `sia replay RUN`)"
        )
