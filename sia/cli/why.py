"""`sia why`: the full audit of one iteration's decision, read back from the ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from sia.cli.integrity import inspect_run
from sia.cli.main import cli, emit_json, open_workspace, pass_workspace
from sia.cli.read import json_option

__all__ = ["why"]


@cli.command()
@click.argument("run_id")
@click.argument("iteration", type=int)
@json_option
@pass_workspace
def why(root: Path, run_id: str, iteration: int, as_json: bool) -> None:
    """Why iteration ITERATION edited or trained, and what came of it.

    Shows the evidence the Feedback Agent read, the rules that fired, the alternatives with
    their scores, the algorithm and why, the expected effect, the commit or adapter tag it
    produced, the validation verdict and the realised effect, each with its ledger seq.

    \b
    Example:
        sia why run-20261122-001 3
        sia why run-20261122-001 3 --json
    """
    from sia.why import explain_iteration

    ws = open_workspace(root)
    with ws.reader() as rec:
        inspect_run(rec, run_id)  # warns on an altered run, stops if it no longer folds
        audit = explain_iteration(rec, ws.repo(), run_id, iteration)
    if as_json:
        emit_json(audit)
        return
    _render(Console(), audit)


def _render(console: Console, audit: dict[str, Any]) -> None:
    head = f"{audit['run_id']} iteration {audit['iteration']}"
    decision = audit["decision"]
    if decision is None:
        console.print(f"{head}: {audit['status']}", markup=False)
        return
    console.print(
        f"[bold]{head}[/] — {decision['lever']} by {decision['agent']} (seq {decision['seq']})"
    )
    console.print(decision["rationale"], markup=False)
    alternatives = Table(title="alternatives weighed")
    for name in ("lever", "score", "allowed", "would use", "why"):
        alternatives.add_column(name, overflow="fold")
    for alt in decision["alternatives"]:
        alternatives.add_row(
            str(alt.get("lever")),
            f"{alt.get('score', 0):+.2g}",
            "yes" if alt.get("allowed") else "no",
            str(alt.get("operator") or alt.get("algorithm") or "-"),
            str(alt.get("why", "")),
        )
    console.print(alternatives)
    evidence = Table(title="evidence (train rollout diagnostics)")
    evidence.add_column("signal")
    evidence.add_column("value", overflow="fold")
    for key, value in audit["evidence"].items():
        if not isinstance(value, dict):
            evidence.add_row(key, _value(value))
    console.print(evidence)
    if decision["algorithm"]:
        console.print(f"algorithm: {decision['algorithm']} — {decision['algorithm_reason']}")
    for rejected in audit["rejected_patches"]:
        console.print(
            f"rejected patch {rejected['attempt']} at {rejected['stage']}: {rejected['reason']}"
            f" (seq {rejected['seq']})",
            markup=False,
        )
    if decision["patch"]:
        console.print("patch:", markup=False)
        console.print(decision["patch"], markup=False)
    calls = audit["agent_calls"]
    if calls["calls"]:
        cost = "no price on file" if calls["cost_usd"] is None else f"${calls['cost_usd']:.4f}"
        console.print(
            f"agent calls: {calls['calls']} to {', '.join(calls['models'])}, "
            f"{calls['input_tokens']} tokens in, {calls['output_tokens']} out, {cost}",
            markup=False,
        )
    console.print(f"expected: {decision['expected_effect']}", markup=False)
    console.print(f"produced: {_produced(audit['produced'])}", markup=False)
    console.print(f"realised: {_realised(audit['evaluation'])}", markup=False)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _produced(p: dict[str, Any]) -> str:
    if p["kind"] == "commit":
        files = ", ".join(p["changed_files"]) or "no files"
        return f"commit {p['commit'][:12]} '{p['subject']}' changing {files} (seq {p['seq']})"
    if p["kind"] == "adapter":
        return (
            f"adapter {p['tag']} sha256:{p['sha256'][:12]} trained with {p['algorithm']}"
            f" on harness {p['harness_commit'][:12]} (seq {p['seq']})"
        )
    if p["kind"] == "nothing":
        return f"no candidate: {p['phase']} abandoned — {p['reason']} (seq {p['seq']})"
    return "nothing yet (the iteration is still running)"


def _realised(e: dict[str, Any]) -> str:
    if e["val"] is None:
        return "not evaluated"
    verdict = {True: "accepted", False: "rejected", None: "awaiting a verdict"}[e["accepted"]]
    text = f"val {e['val']:.3f} (seq {e['seq']}), {verdict}"
    if e["delta"] is not None:
        paid = "paid off" if e["paid_off"] else "did not pay off"
        text += f"; {e['delta']:+.3f} against the best before it, {paid} (seq {e['outcome_seq']})"
    return text
