"""Rebuild a run from stored records, and describe it as a timeline.

Records are anything with ``seq, ts, type, version, payload`` attributes (the ledger's
``EventRecord``); this module stays free of the ledger so the core remains pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from statemachine.codec import decode
from statemachine.state import Envelope, IterationRecord, RunState, fold

__all__ = ["StoredRecord", "envelopes", "replay", "timeline"]


class StoredRecord(Protocol):
    seq: int
    ts: float
    type: str
    version: int
    payload: dict[str, Any]


def envelopes(records: Iterable[StoredRecord]) -> list[Envelope]:
    return [Envelope(r.seq, r.ts, decode(r.type, r.version, r.payload)) for r in records]


def replay(run_id: str, records: Iterable[StoredRecord]) -> RunState:
    """The state of ``run_id`` after all ``records`` (in seq order)."""
    return fold(run_id, envelopes(records))


def _iteration(rec: IterationRecord) -> dict[str, Any]:
    d = rec.decision
    return {
        "iteration": rec.iteration,
        "phases": list(rec.phases),
        "items": len(rec.item_ids),
        "rollout_reward": rec.rollout.mean_reward if rec.rollout else None,
        "lever": d.lever if d else None,
        "agent": d.agent if d else None,
        "rules": list(d.rules) if d else [],
        "algorithm": d.algorithm if d else None,
        "rationale": d.rationale if d else None,
        "expected_effect": d.expected_effect if d else None,
        "harness_commit": rec.harness_commit,
        "adapter_tag": rec.adapter_tag,
        "val_score": rec.score,
        "accepted": rec.accepted,
        "abandoned": rec.abandoned,
        "delta": rec.outcome.delta if rec.outcome else None,
    }


def timeline(state: RunState) -> dict[str, Any]:
    """A JSON-ready summary of the run, iteration by iteration."""
    best = state.best
    return {
        "run_id": state.run_id,
        "status": state.status,
        "phase": state.phase.value if state.phase else None,
        "task": state.task,
        "mode": state.mode,
        "seed": state.seed,
        "parent": list(state.parent) if state.parent else None,
        "events": state.last_seq,
        "started_ts": state.started_ts,
        "last_ts": state.last_ts,
        "resumes": state.resumes,
        "best": None
        if best is None
        else {
            "iteration": best.iteration,
            "harness_commit": best.harness_commit,
            "adapter_tag": best.adapter_tag,
            "val_score": best.score,
        },
        "test_score": state.test_score,
        "finish_reason": state.finish_reason,
        "error": state.error,
        "iterations": [_iteration(r) for r in state.iterations],
    }
