"""`sia bisect`: the first accepted iteration of a run where a metric regressed."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from sia.bisect import bisect_run, parse_metric
from sia.cli.integrity import refuse_altered
from sia.cli.main import cli, emit_json, open_workspace, pass_workspace
from sia.cli.read import json_option
from sia.history import iteration_records, run_state

__all__ = ["bisect"]


@cli.command()
@click.argument("run_id")
@click.option(
    "--metric",
    default="test",
    show_default=True,
    help="val, test, or SPLIT:KEY for an evaluation metric (like val:failures).",
)
@click.option("--good", type=int, default=None, help="A good accepted iteration (default: 0).")
@click.option("--bad", type=int, default=None, help="A bad accepted iteration (default: last).")
@click.option("--tolerance", type=float, default=0.0, show_default=True, help="Allowed slack.")
@click.option("--lower-is-better", is_flag=True, help="The metric improves downwards.")
@click.option("--recorded", is_flag=True, help="Use the val scores in the ledger; run nothing.")
@json_option
@pass_workspace
def bisect(
    root: Path,
    run_id: str,
    metric: str,
    good: int | None,
    bad: int | None,
    tolerance: float,
    lower_is_better: bool,
    recorded: bool,
    as_json: bool,
) -> None:
    """Binary-search a run's accepted iterations for the first one where METRIC regressed.

    Each candidate (harness commit + adapter) is evaluated on a whole split with the run's
    own config, so ⌈log2 n⌉ evaluations find the culprit among n candidates. Prints the
    culprit's decision and its harness diff or adapter manifest.

    \b
    Example:
        sia bisect run-20261122-001 --metric test
        sia bisect run-20261122-001 --metric val:failures --lower-is-better --good 1 --bad 6
    """
    ws = open_workspace(root)
    chosen = parse_metric(metric, higher_is_better=not lower_is_better)
    with ws.reader() as recorder:
        refuse_altered(recorder, run_id, "bisect")  # before a model loads
    result = bisect_run(
        ws, run_id, chosen, good=good, bad=bad, tolerance=tolerance, recorded=recorded
    )
    with ws.reader() as recorder:
        records = iteration_records(run_state(recorder, run_id))
    assert result.found is not None
    before, culprit = result.found
    decision = records[result.culprit].decision
    repo = ws.repo()
    patch = repo.diff(before.harness_commit, culprit.harness_commit)
    adapter = None
    if culprit.adapter_tag and culprit.adapter_tag != before.adapter_tag:
        tag = culprit.adapter_tag
        adapter = {"tag": tag, "manifest": repo.adapter_manifest(tag)}
    data = {
        **asdict(result),
        "decision": None
        if decision is None
        else {
            "lever": decision.lever,
            "agent": decision.agent,
            "rationale": decision.rationale,
            "algorithm": decision.algorithm,
        },
        "patch": patch,
        "adapter": adapter,
    }
    if as_json:
        emit_json(data)
        return
    for iteration in result.candidates:
        if iteration in result.values:
            click.echo(f"iteration {iteration}: {result.metric} = {result.values[iteration]:.4g}")
    click.echo(
        f"first bad iteration: {result.culprit} (last good: {result.last_good}); "
        f"{result.evaluations} evaluation(s) in the search, bound ⌈log2 n⌉ = {result.bound}"
    )
    if decision is not None:
        click.echo(f"decision: {decision.lever} by {decision.agent}: {decision.rationale}")
    if adapter is not None:
        click.echo(f"adapter {adapter['tag']}: {adapter['manifest']}")
    if patch:
        click.echo(patch)
