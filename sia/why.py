"""Why an iteration did what it did: the decision, its evidence and its consequences.

Everything here is read back from the ledger and the harness repo, never recomputed: the
Feedback Agent's recorded diagnostics, the rules that fired, the alternatives with their
scores, the algorithm and its reason, the expected effect; then what the decision produced
(a harness commit with the files it changed, or an adapter tag with its manifest, or the
reason nothing was produced), how the candidate scored on val, the verdict, and the realised
effect. Each claim names where it comes from, so it can be checked (``sia verify`` checks
the references themselves).
"""

from __future__ import annotations

from typing import Any

from harness_repo.repo import HarnessRepo
from ledger import Recorder
from sia.errors import SiaError
from sia.history import iteration_records, run_state
from statemachine import events as ev
from statemachine.replay import envelopes

__all__ = ["explain_iteration"]


def explain_iteration(recorder: Recorder, repo: HarnessRepo, run_id: str, iteration: int) -> dict:
    """The audit of ``iteration`` of ``run_id`` as a JSON-ready dict.

    Raises :class:`SiaError` when the run has no such iteration, or when iteration 0 (the
    baseline, which has no decision) is asked for.
    """
    state = run_state(recorder, run_id)
    records = iteration_records(state)
    if iteration == 0 and 0 in records:
        raise SiaError(
            f"iteration 0 of {run_id} is the baseline: the initial harness, evaluated "
            "without a decision; ask about iteration 1 or later"
        )
    rec = records.get(iteration)
    if rec is None:
        known = ", ".join(str(i) for i in sorted(records) if i > 0) or "none"
        raise SiaError(f"run {run_id} has no iteration {iteration} (iterations: {known})")
    found: dict[str, Any] = {"seqs": {}, "rejected": [], "calls": []}
    for envelope in envelopes(recorder.read(run_id)):
        event = envelope.event
        if getattr(event, "iteration", None) != iteration:
            continue
        name = type(event).__name__
        found["seqs"].setdefault(name, envelope.seq)
        if isinstance(event, ev.PatchRejected):
            found["rejected"].append(
                {
                    "seq": envelope.seq,
                    "attempt": event.attempt,
                    "stage": event.stage,
                    "reason": event.reason,
                }
            )
        elif isinstance(event, ev.AgentCalled):
            found["calls"].append(event)
        elif isinstance(event, ev.HarnessCommitted):
            found["commit"] = event
        elif isinstance(event, ev.AdapterTagged):
            found["adapter"] = event
        elif isinstance(event, ev.Evaluated) and event.split == "val":
            found["evaluated"] = event
        elif isinstance(event, ev.CandidateAbandoned):
            found["abandoned"] = event
    decision = rec.decision
    if decision is None:
        return {
            "run_id": run_id,
            "iteration": iteration,
            "decision": None,
            "status": "no decision recorded yet",
        }
    return {
        "run_id": run_id,
        "mode": state.mode,
        "task": state.task,
        "iteration": iteration,
        "decision": {
            "seq": found["seqs"].get("DecisionMade"),
            "lever": decision.lever,
            "agent": decision.agent,
            "rationale": decision.rationale,
            "rules": list(decision.rules),
            "alternatives": [dict(alt) for alt in decision.alternatives],
            "algorithm": decision.algorithm,
            "algorithm_reason": decision.algorithm_reason,
            "expected_effect": decision.expected_effect,
            "edit_summary": (decision.edit or {}).get("summary"),
            "patch": (decision.edit or {}).get("patch"),
        },
        "evidence": dict(decision.diagnostics),
        "rejected_patches": found["rejected"],
        "agent_calls": _calls(found["calls"]),
        "produced": _produced(repo, found),
        "evaluation": _evaluation(found, rec),
    }


def _calls(calls: list[ev.AgentCalled]) -> dict[str, Any]:
    """What asking a model-backed agent cost in this iteration (zero for offline agents)."""
    priced = [call.cost_usd for call in calls if call.cost_usd is not None]
    return {
        "calls": len(calls),
        "models": sorted({call.model for call in calls}),
        "input_tokens": sum(call.input_tokens for call in calls),
        "output_tokens": sum(call.output_tokens for call in calls),
        "cost_usd": round(sum(priced), 6) if priced else None,
        "unpriced_calls": len(calls) - len(priced),
    }


def _produced(repo: HarnessRepo, found: dict[str, Any]) -> dict[str, Any]:
    if "abandoned" in found:
        event = found["abandoned"]
        return {
            "kind": "nothing",
            "seq": found["seqs"]["CandidateAbandoned"],
            "phase": event.phase,
            "reason": event.reason,
        }
    if "adapter" in found:
        event = found["adapter"]
        manifest = repo.adapter_manifest(event.tag)
        return {
            "kind": "adapter",
            "seq": found["seqs"]["AdapterTagged"],
            "tag": event.tag,
            "sha256": event.sha256,
            "algorithm": manifest.get("algorithm"),
            "harness_commit": event.harness_commit,
            "metrics": manifest.get("metrics", {}),
        }
    if "commit" in found:
        event = found["commit"]
        info = repo.commit_info(event.commit)
        changed = repo.changed_files(event.parent, event.commit) if event.parent else []
        return {
            "kind": "commit",
            "seq": found["seqs"]["HarnessCommitted"],
            "commit": event.commit,
            "parent": event.parent,
            "subject": info.subject,
            "trailers": dict(info.trailers),
            "changed_files": changed,
        }
    return {"kind": "pending"}


def _evaluation(found: dict[str, Any], rec: Any) -> dict[str, Any]:
    evaluated = found.get("evaluated")
    outcome = rec.outcome
    return {
        "seq": found["seqs"].get("Evaluated"),
        "val": evaluated.score if evaluated is not None else None,
        "accepted": rec.accepted,
        "delta": outcome.delta if outcome is not None else None,
        "paid_off": outcome.paid_off if outcome is not None else None,
        "outcome_seq": found["seqs"].get("OutcomeRecorded"),
    }
