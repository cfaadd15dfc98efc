"""Commands that write to the ledger: they take the workspace's single-writer lock."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
from rich.console import Console

from sia.cli.main import cli, pass_workspace
from sia.config import RunConfig
from sia.history import run_state
from sia.orchestrator import Orchestrator
from sia.wiring import check_supported, open_components
from sia.workspace import Workspace
from statemachine.planner import Budget
from statemachine.replay import timeline

__all__ = ["resume", "run"]


def _summary(state) -> None:
    data = timeline(state)
    best = data["best"] or {}
    Console().print(
        f"run [bold]{data['run_id']}[/] {data['status']}: best iteration "
        f"{best.get('iteration', '-')} val={best.get('val_score')} test={data['test_score']}"
        + (f" — {data['finish_reason']}" if data["finish_reason"] else "")
        + (f" — {data['error']}" if data["error"] else "")
    )
    Console().print(f"inspect it with: sia replay {data['run_id']}")


def _drive(ws: Workspace, config: RunConfig, act) -> None:
    with ws.writer() as recorder, open_components(config, recorder) as components:
        orch = Orchestrator(
            recorder=recorder, repo=ws.repo(), artifacts=ws.artifacts(), components=components
        )
        state = act(orch)
    _summary(state)


@cli.command()
@click.option("--task", default="arith", show_default=True, help="Task id (see `sia tasks`).")
@click.option(
    "--mode",
    type=click.Choice(["h", "w", "w+h"]),
    default="h",
    show_default=True,
    help="h: harness edits only; w: LoRA training only; w+h: the agent chooses.",
)
@click.option("--iterations", type=int, default=3, show_default=True, help="Iteration budget.")
@click.option("--wall-seconds", type=float, default=None, help="Wall-time budget.")
@click.option("--tokens", type=int, default=None, help="Policy token budget.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Items per rollout.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--policy",
    default="smollm2-135m-instruct",
    show_default=True,
    help="Policy model (see `sia models`).",
)
@click.option("--algorithm", default=None, help="Force one RL algorithm for every TRAIN.")
@click.option("--run-id", default=None, help="Name of the run (default: run-<UTC time>).")
@pass_workspace
def run(
    root: Path,
    task: str,
    mode: str,
    iterations: int,
    wall_seconds: float | None,
    tokens: int | None,
    batch_size: int,
    seed: int,
    policy: str,
    algorithm: str | None,
    run_id: str | None,
) -> None:
    """Start a run and drive it until its budget is spent.

    \b
    Example:
        sia run --task arith --mode h --iterations 3 --batch-size 8
    """
    config = RunConfig(
        task=task,
        mode=mode,
        seed=seed,
        batch_size=batch_size,
        policy=policy,
        algorithm=algorithm,
        budget=Budget(iterations=iterations, wall_seconds=wall_seconds, tokens=tokens),
    )
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("run-%Y%m%d-%H%M%S")
    check_supported(config)
    _drive(Workspace.create(root), config, lambda orch: orch.start(run_id, config))


@cli.command()
@click.argument("run_id")
@pass_workspace
def resume(root: Path, run_id: str) -> None:
    """Continue a run after a crash or interrupt, settling half-done effects exactly once.

    \b
    Example:
        sia resume run-20261122-001
    """
    ws = Workspace.open(root)
    with ws.reader() as recorder:
        config = RunConfig.from_dict(run_state(recorder, run_id).config)
    _drive(ws, config, lambda orch: orch.resume(run_id))
