"""`sia evaluate`: score a run's recorded candidates again, on any split."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sia.cli.integrity import refuse_altered
from sia.cli.main import cli, emit_json, open_workspace, parse_iterations, pass_workspace
from sia.cli.read import json_option

__all__ = ["evaluate"]


@cli.command()
@click.argument("run_id")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default="test",
    show_default=True,
    help="Items to score the candidates on.",
)
@click.option(
    "--iterations", default="all", show_default=True, help="Comma-separated iterations, or all."
)
@json_option
@pass_workspace
def evaluate(root: Path, run_id: str, split: str, iterations: str, as_json: bool) -> None:
    """Score each iteration's candidate (harness commit + adapter) on a split.

    Uses the run's stored config (task, seed, policy) and verifies every adapter's sha256;
    the run itself is only read, so this works on finished runs and alongside live ones.

    \b
    Examples:
        sia evaluate run-20261122-001                      # test score per iteration
        sia evaluate run-20261122-001 --split val --iterations 0,3 --json
    """
    from sia.evaluation import evaluate_candidates

    ws = open_workspace(root)
    chosen = parse_iterations(iterations)
    with ws.reader() as rec:
        refuse_altered(rec, run_id, "evaluate")  # before a model loads
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    bar = Progress(*columns, TimeRemainingColumn(), transient=True, disable=as_json)
    task = bar.add_task(f"evaluating on {split}", total=None)

    def progress(done: int, total: int) -> None:
        # Started on the first episode, so an early error prints alone, on one line.
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        scores = evaluate_candidates(ws, run_id, split=split, iterations=chosen, progress=progress)
    finally:
        if bar.live.is_started:
            bar.stop()
    rows = [
        {
            "iteration": s.candidate.iteration,
            "lever": s.candidate.lever,
            "accepted": s.candidate.accepted,
            "harness_commit": s.candidate.harness_commit,
            "adapter_tag": s.candidate.adapter_tag,
            "recorded_val": s.candidate.val,
            "split": s.split,
            "score": s.score,
            "failures": s.failures,
        }
        for s in scores
    ]
    if as_json:
        emit_json({"run_id": run_id, "split": split, "candidates": rows})
        return
    table = Table(title=f"{run_id}: candidates on {split}")
    for name in ("iter", "lever", "accepted", "commit", "adapter", "val (recorded)", split):
        table.add_column(name)
    for row in rows:
        table.add_row(
            str(row["iteration"]),
            row["lever"] or "-",
            {True: "yes", False: "no", None: "-"}[row["accepted"]],
            row["harness_commit"][:10],
            row["adapter_tag"] or "-",
            f"{row['recorded_val']:.3f}",
            f"{row['score']:.3f}",
        )
    Console().print(table)
