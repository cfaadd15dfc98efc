"""`sia report`: a run as one HTML file that opens offline."""

from __future__ import annotations

from pathlib import Path

import click

from sia.cli.integrity import refuse_altered
from sia.cli.main import cli, open_workspace, pass_workspace
from sia.report import write_report

__all__ = ["report"]


@cli.command()
@click.argument("run_id")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the page.  [default: <workspace>/reports/RUN.html]",
)
@pass_workspace
def report(root: Path, run_id: str, out: Path | None) -> None:
    """Write a run's report: one self-contained HTML file that needs no network.

    It shows the val and test score per iteration (accepted and rejected candidates),
    the decision timeline with each rationale, the reward distribution of each rollout,
    each adapter's training curves, every harness edit as a highlighted diff, the tree of
    branched runs and the tokens and cost per phase. Every number is read from the ledger
    and the harness repo; the data is also embedded in the page as JSON
    (element id "sia-report-data"). Works while the run is live.

    \b
    Example:
        sia report run-20261122-001
        sia report run-20261122-001 --out /tmp/run.html
    """
    ws = open_workspace(root)
    with ws.reader() as rec:
        refuse_altered(rec, run_id, "report on")  # a report is read as the record's word
    path, data = write_report(ws, run_id, out)
    episodes = sum(s.episodes for s in data.rewards)
    click.echo(
        f"wrote {path} ({len(data.iterations)} iterations, {len(data.decisions)} decisions, "
        f"{len(data.edits)} edits, {len(data.training)} adapters, {episodes} rollout episodes)"
    )
