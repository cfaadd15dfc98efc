"""`sia episodes`: what the harness did in each episode, read back from the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from sia.cli.integrity import inspect_run
from sia.cli.main import cli, emit_json, open_workspace, pass_workspace
from sia.cli.read import json_option
from sia.errors import SiaError
from sia.trajectories import Trajectory, read_trajectories

__all__ = ["episodes"]


@cli.command()
@click.argument("run_id")
@click.option("--iteration", type=int, default=None, help="Only this iteration.")
@click.option(
    "--purpose", type=click.Choice(["rollout", "eval"]), default=None, help="Rollouts or evals."
)
@click.option("--episode", "episode_id", default=None, help="Show one episode in full.")
@json_option
@pass_workspace
def episodes(
    root: Path,
    run_id: str,
    iteration: int | None,
    purpose: str | None,
    episode_id: str | None,
    as_json: bool,
) -> None:
    """List a run's episodes, or show one with every call's tokens and logprobs.

    \b
    Examples:
        sia episodes run-20261122-001 --iteration 1 --purpose rollout
        sia episodes run-20261122-001 --episode rollout-1-00003-add-47-38 --json
    """
    ws = open_workspace(root)
    with ws.reader() as rec:
        found = read_trajectories(
            rec, run_id, iteration=iteration, purpose=purpose, episode_id=episode_id
        )
        # Episodes live in their own table (a bare rollout records them without events):
        # an unknown run must not list as "0 episodes", nor an altered one go unnoticed.
        if rec.head(run_id) is not None:
            inspect_run(rec, run_id)
        elif not rec.read_episodes(run_id):
            raise SiaError(f"no run named {run_id} in this workspace")
    if episode_id is not None and not found:
        raise SiaError(f"run {run_id} has no episode {episode_id!r}")
    if as_json:
        emit_json([t.to_dict() for t in found])
    elif episode_id is not None:
        _show(Console(), found[0])
    else:
        _list(Console(), run_id, found)


def _list(console: Console, run_id: str, found: list[Trajectory]) -> None:
    table = Table(title=f"{run_id}: {len(found)} episodes")
    for name in ("iter", "purpose", "episode", "reward", "status", "calls", "tokens", "reason"):
        table.add_column(name, overflow="fold")
    for t in found:
        ep = t.episode
        table.add_row(
            str(ep.iteration),
            f"{ep.purpose}/{ep.split}",
            ep.episode_id,
            "-" if ep.reward is None else f"{ep.reward:g}",
            ep.status,
            str(len(t.calls)),
            str(t.completion_tokens),
            ep.reason,
        )
    console.print(table)


def _show(console: Console, t: Trajectory) -> None:
    data = t.to_dict()
    console.print(
        f"[bold]{data['episode_id']}[/] item {data['item_id']} reward {data['reward']} "
        f"status {data['status']} {data['reason']}",
        markup=True,
    )
    if data["answer"] is not None:
        console.print(f"answer: {data['answer']!r}", markup=False)
    if data["reward_detail"]:
        # What the task measured behind the reward (a speedup, an evaluator's verdict).
        console.print(f"reward detail: {json.dumps(data['reward_detail'])}", markup=False)
    for call in data["calls"]:
        console.print(
            f"\n[bold]call {call['call_index']}[/] ({call['finish_reason']}, "
            f"adapter {call['adapter_tag'] or 'none'}, {call['latency_ms']:.0f} ms)"
        )
        console.print(f"request: {call['request']}", markup=False)
        console.print(f"completion: {call['completion']!r}", markup=False)
        pairs = ", ".join(
            f"{tok}:{lp:.3f}"
            for tok, lp in zip(call["completion_ids"], call["logprobs"], strict=False)
        )
        console.print(
            f"prompt ids: {len(call['prompt_ids'])}; completion id:logprob: {pairs}", markup=False
        )
