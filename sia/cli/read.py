"""Read-only commands. They open the ledger read-only, so they work while a run is live."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.syntax import Syntax
from rich.table import Table

from ledger import LedgerBusy
from sia.audit import audit_run, problem_line
from sia.cli.integrity import inspect_run, warn_altered_runs
from sia.cli.main import cli, emit_json, open_workspace, parse_iterations, pass_workspace
from sia.history import harness_at, run_state
from sia.report.tree import run_tree
from statemachine.errors import SiaError
from statemachine.replay import timeline
from statemachine.state import RunState

__all__ = ["diff", "log", "replay", "status", "verify"]

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _score(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@cli.command()
@json_option
@click.option("--watch", is_flag=True, help="Redraw the table until Ctrl-C (while a run is live).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@pass_workspace
def status(root: Path, as_json: bool, watch: bool, interval: float) -> None:
    """List the runs in the workspace with their phase and best score.

    \b
    Examples:
        sia status --json
        sia status --watch          # from another terminal while `sia run` is going
    """
    ws = open_workspace(root)
    if as_json:
        if watch:
            raise click.UsageError("--watch draws a live table; it does not combine with --json")
        emit_json(_status_rows(ws))
        return
    if not watch:
        Console().print(_status_table(ws, _status_rows(ws)))
        return
    # The ledger is reopened read-only for every redraw, so the live writer is never held up
    # for longer than one read.
    warned: set[str] = set()
    with Live(_status_table(ws, _status_rows(ws, warned)), auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                rows = _status_rows(ws, warned)
                live.update(_status_table(ws, rows, watching=True), refresh=True)
        except KeyboardInterrupt:
            pass


def _status_rows(ws, warned: set[str] | None = None) -> list[dict]:
    """One row per run. A run that fails verification gets a warning line on stderr (once
    per run in ``warned``, so ``--watch`` does not repeat it every redraw)."""
    rows = []
    with ws.reader() as rec:
        altered = warn_altered_runs(rec, warned)
        for head in rec.heads():
            try:
                state = run_state(rec, head.run_id)
            except LedgerBusy:
                raise
            except SiaError:
                # verify just read these rows, so this is their content, not the file: the
                # run is listed all the same, to neither hide the others nor be hidden.
                state = RunState(
                    head.run_id, last_seq=head.seq, last_ts=head.ts, status="unreadable"
                )
            rows.append(_status_row(state, altered=head.run_id in altered))
    return rows


def _status_row(s: RunState, *, altered: bool) -> dict:
    return {
        "run_id": s.run_id,
        # An altered run's recorded status is whatever the forger left: say what is known.
        "status": "tampered" if altered else s.status,
        "phase": s.phase.value if s.phase else None,
        "iteration": s.iteration,
        "mode": s.mode,
        "task": s.task,
        "events": s.last_seq,
        "best_val": s.best.score if s.best else None,
        "test": s.test_score,
        "tokens": s.tokens_used,
        "parent": list(s.parent) if s.parent else None,
        "updated": s.last_ts,
    }


def _status_table(ws, rows: list[dict], watching: bool = False) -> Table:
    title = f"runs in {ws.root}"
    if watching:
        title += f"  ·  {dt.datetime.now(dt.UTC):%H:%M:%S} UTC, Ctrl-C to stop"
    table = Table(title=title)
    for col in (
        "run",
        "status",
        "phase",
        "iter",
        "mode",
        "task",
        "events",
        "tokens",
        "best val",
        "test",
        "updated (UTC)",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["run_id"],
            r["status"],
            r["phase"] or "-",
            str(r["iteration"]),
            r["mode"] or "-",
            r["task"] or "-",
            str(r["events"]),
            f"{r['tokens']:,}",
            _score(r["best_val"]),
            _score(r["test"]),
            _when(r["updated"]),
        )
    return table


@cli.command()
@click.argument("run_id")
@click.option(
    "--rerun",
    is_flag=True,
    help="Also re-execute iterations (rollout and val evaluation) and compare them with the "
    "recorded episodes, token by token; exits 1 on any divergence.",
)
@click.option(
    "--iterations", default="all", show_default=True, help="With --rerun: which iterations."
)
@json_option
@pass_workspace
def replay(root: Path, run_id: str, rerun: bool, iterations: str, as_json: bool) -> None:
    """Rebuild a run's timeline from the ledger alone and check what it references.

    Folds every event, checks the hash chain, and checks that each commit, adapter tag and
    artifact it names exists. Exits 1 if any check fails. With --rerun, re-executes the
    chosen iterations with their recorded harness, adapter, items and seeds, and reports
    the first divergence of each episode (call and token); the ledger is only read. A run
    whose checks fail is not re-executed: --rerun then names the first problem and exits 1.

    \b
    Example:
        sia replay run-20261122-001 --json
        sia replay run-20261122-001 --rerun --iterations 1,2
    """
    ws = open_workspace(root)
    with ws.reader() as rec:
        result = audit_run(rec, ws.repo(), ws.artifacts(), run_id)
    if rerun and not result.ok:
        # Nothing is re-executed on a record that does not hold together; say why in a line.
        raise SiaError(f"cannot rerun {run_id}: {problem_line(run_id, result.problems)}")
    data = timeline(result.state) if result.state else {"run_id": run_id}
    data["problems"] = [asdict(p) for p in result.problems]
    reports = []
    if rerun:
        from sia.rerun import rerun_iterations

        reports = rerun_iterations(ws, run_id, iterations=parse_iterations(iterations))
        data["rerun"] = [report.to_dict() for report in reports]
    if as_json:
        emit_json(data)
    else:
        _print_timeline(data)
        for report in reports:
            _print_rerun(report)
    if not result.ok or any(report.divergences for report in reports):
        raise SystemExit(1)


def _print_rerun(report) -> None:
    head = (
        f"rerun iteration {report.iteration} {report.purpose}: {report.episodes} episodes, "
        f"{report.calls} calls, {len(report.divergences)} diverged"
    )
    click.echo(head)
    for d in report.divergences[:5]:
        where = f"call {d.call}" if d.call is not None else "episode"
        token = f", token {d.token}" if d.token is not None else ""
        values = f" (recorded {d.recorded!r}, rerun {d.rerun!r})" if d.recorded is not None else ""
        click.echo(f"  {d.episode_id} item {d.item_id}: {d.what} at {where}{token}{values}")


def _print_timeline(data: dict) -> None:
    console = Console()
    if "iterations" in data:
        console.print(
            f"[bold]{data['run_id']}[/] task={data['task']} mode={data['mode']} "
            f"seed={data['seed']} status={data['status']} events={data['events']}"
            + (f" parent={data['parent'][0]}@{data['parent'][1]}" if data["parent"] else "")
        )
        table = Table()
        for col in ("iter", "phases", "lever", "algorithm", "commit", "adapter", "val", "verdict"):
            table.add_column(col, overflow="fold")
        for it in data["iterations"]:
            verdict = {True: "accepted", False: "rejected", None: "-"}[it["accepted"]]
            if it["abandoned"]:
                verdict = "abandoned"
            table.add_row(
                str(it["iteration"]),
                "→".join(it["phases"]),
                it["lever"] or "-",
                it["algorithm"] or "-",
                (it["harness_commit"] or "-")[:8],
                it["adapter_tag"] or "-",
                _score(it["val_score"]),
                verdict,
            )
        console.print(table)
        _print_reasons(console, data["iterations"])
        best = data["best"]
        if best:
            console.print(
                f"best: iteration {best['iteration']} val={_score(best['val_score'])}"
                f" test={_score(data['test_score'])}"
                + (f" ({data['finish_reason']})" if data["finish_reason"] else "")
            )
    for p in data["problems"]:
        console.print(f"[red]problem[/] seq {p['seq']}: {p['kind']}: {p['detail']}")
    if not data["problems"]:
        console.print("[green]ledger chain and references verified[/]")


def _print_reasons(console: Console, iterations: list[dict]) -> None:
    """Each decision's full rationale, expected effect and realised outcome, as prose."""
    for it in iterations:
        if not it["rationale"]:
            continue
        console.print(f"\n[bold]iteration {it['iteration']}[/] — {it['lever']} ({it['agent']})")
        console.print(it["rationale"], markup=False)
        if it["expected_effect"]:
            console.print(f"expected: {it['expected_effect']}", markup=False)
        if it["delta"] is not None:
            console.print(f"outcome: validation {it['delta']:+.3f}", markup=False)
        if it["abandoned"]:
            console.print(f"outcome: abandoned, no candidate: {it['abandoned']}", markup=False)


@cli.command()
@click.argument("run_id")
@json_option
@pass_workspace
def verify(root: Path, run_id: str, as_json: bool) -> None:
    """Check a run's hash chain, seqs and references; name the first bad seq.

    \b
    Example:
        sia verify run-20261122-001
    """
    ws = open_workspace(root)
    with ws.reader() as rec:
        result = audit_run(rec, ws.repo(), ws.artifacts(), run_id)
    if as_json:
        emit_json(
            {
                "run_id": run_id,
                "events": result.events,
                "ok": result.ok,
                "problems": [asdict(p) for p in result.problems],
            }
        )
    elif result.ok:
        click.echo(f"{run_id}: {result.events} events, chain intact, references verified")
    else:
        for p in result.problems:
            click.echo(f"{run_id}: seq {p.seq}: {p.kind}: {p.detail}")
    if not result.ok:
        raise SystemExit(1)


def _run_tree(ws) -> list[dict]:
    """Every run of the workspace, branches nested under the run they started from."""
    with ws.reader() as rec:
        warn_altered_runs(rec)
        return [asdict(node) for node in run_tree(rec)]


def _print_tree(nodes: list[dict], prefix: str = "") -> None:
    for index, node in enumerate(nodes):
        root, last = node["parent"] is None, index == len(nodes) - 1
        where = ""
        if not root:
            where = f" from {node['parent']} after iteration {node['at_iteration']}"
            where += f" (seq {node['parent_seq']})"
        best = "-" if node["best_val"] is None else f"{node['best_val']:.3f}"
        connector = "" if root else ("└── " if last else "├── ")
        click.echo(
            f"{prefix}{connector}{node['run_id']}{where}: mode {node['mode']}, "
            f"{node['status']} at iteration {node['iteration']}, best val {best}"
        )
        below = "  " if root else ("    " if last else "│   ")
        _print_tree(node["branches"], prefix + below)


@cli.command()
@click.argument("run_id", required=False)
@json_option
@pass_workspace
def log(root: Path, run_id: str | None, as_json: bool) -> None:
    """Show a run's harness history (one commit per edit, its adapter tags); without RUN,
    the tree of runs: each branch under the run and iteration it started from.

    \b
    Example:
        sia log run-20261122-001
        sia log --json
    """
    ws = open_workspace(root)
    if run_id is None:
        tree = _run_tree(ws)
        if as_json:
            emit_json({"runs": tree})
        else:
            _print_tree(tree)
        return
    repo = ws.repo()
    with ws.reader() as rec:
        inspect_run(rec, run_id)  # fails clearly on an unknown run, warns on an altered one
    commits = repo.log(run_id)
    tags = [(t, repo.adapter_manifest(t)) for t in repo.adapter_tags(run_id)]
    if as_json:
        emit_json(
            {
                "commits": [
                    {
                        "sha": c.sha,
                        "parents": list(c.parents),
                        "subject": c.subject,
                        "trailers": c.trailers,
                        "time": c.time,
                    }
                    for c in commits
                ],
                "adapters": [{"tag": t, "manifest": m} for t, m in tags],
            }
        )
        return
    console = Console()
    for c in commits:
        trailers = " ".join(f"{k}={v}" for k, v in sorted(c.trailers.items()))
        console.print(f"[yellow]{c.sha[:12]}[/] {c.subject}  [dim]{trailers}[/]")
    for t, m in tags:
        console.print(
            f"[cyan]{t}[/] {m.get('algorithm')} sha256={m['sha256'][:12]} "
            f"metrics={m.get('metrics')}"
        )


@cli.command()
@click.argument("run_id")
@click.argument("a", type=int)
@click.argument("b", type=int)
@json_option
@pass_workspace
def diff(root: Path, run_id: str, a: int, b: int, as_json: bool) -> None:
    """Diff the harness a run used at iteration A against iteration B.

    \b
    Example:
        sia diff run-20261122-001 0 3
    """
    ws = open_workspace(root)
    with ws.reader() as rec:
        state = inspect_run(rec, run_id)
    left, right = harness_at(state, a), harness_at(state, b)
    patch = ws.repo().diff(left, right)
    if as_json:
        emit_json(
            {
                "run_id": run_id,
                "a": {"iteration": a, "commit": left},
                "b": {"iteration": b, "commit": right},
                "patch": patch,
            }
        )
    elif patch:
        Console().print(Syntax(patch, "diff", theme="ansi_dark"))
    else:
        click.echo(f"no harness change between iteration {a} and {b}")
