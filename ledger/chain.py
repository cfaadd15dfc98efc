"""The tamper-evident hash chain: canonical encoding, event hashes, verification.

Each event's hash is the SHA-256 of a canonical JSON array of all its fields plus the hash
of the event before it (``GENESIS`` for seq 1), so editing, dropping, duplicating or
reordering any stored event shows up at the first seq it touches.
"""

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from ledger.records import EventRecord, Problem, RunHead

__all__ = ["GENESIS", "canonical_json", "event_hash", "hash_encoded", "verify_chain"]

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """Encode ``value`` as the one JSON text the chain hashes: sorted keys, no spaces.

    Non-finite floats are refused because they have no JSON spelling.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def event_hash(
    prev_hash: str,
    run_id: str,
    seq: int,
    ts: float,
    type: str,
    version: int,
    payload: dict[str, Any],
) -> str:
    """Hex SHA-256 of ``[prev_hash, run_id, seq, ts, type, version, payload]`` as canonical JSON."""
    return hash_encoded(prev_hash, run_id, seq, ts, type, version, canonical_json(payload))


def hash_encoded(
    prev_hash: str, run_id: str, seq: int, ts: float, type: str, version: int, payload_json: str
) -> str:
    """``event_hash`` for a payload already in canonical JSON, which the ledger stores.

    Splicing the payload text into the array gives byte-for-byte the canonical JSON of the
    whole array, because canonical encoding is the same at every nesting level; appends use
    this to avoid encoding each payload twice.
    """
    head = canonical_json([prev_hash, run_id, int(seq), float(ts), type, int(version)])
    text = f"{head[:-1]},{payload_json}]"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def verify_chain(
    run_id: str, records: Iterable[EventRecord], head: RunHead | None
) -> list[Problem]:
    """Every defect in one run's stored events, earliest seq first; empty when intact.

    ``records`` are the raw stored rows in any order, duplicates included. A defect is
    reported once, at the seq where it first shows: a missing event is not also reported
    as a broken link from its successor.
    """
    problems: list[Problem] = []
    prev: EventRecord | None = None
    expected = 1
    for rec in sorted(records, key=lambda r: r.seq):
        if rec.run_id != run_id:
            problems.append(Problem(rec.seq, "foreign_run", f"row belongs to run {rec.run_id!r}"))
            continue
        if prev is not None and rec.seq == prev.seq:
            problems.append(Problem(rec.seq, "duplicate", f"more than one event has seq {rec.seq}"))
            continue
        contiguous = rec.seq == expected
        if rec.seq < expected:
            problems.append(Problem(rec.seq, "bad_start", "a run's first event must be seq 1"))
        elif not contiguous:
            kind = "bad_start" if prev is None else "gap"
            missing = str(expected) if rec.seq == expected + 1 else f"{expected}..{rec.seq - 1}"
            problems.append(Problem(expected, kind, f"seq {missing} missing before seq {rec.seq}"))
        if contiguous:
            want = prev.hash if prev is not None else GENESIS
            if rec.prev_hash != want:
                what = f"seq {prev.seq}" if prev is not None else "genesis"
                problems.append(
                    Problem(rec.seq, "broken_link", f"prev_hash is not the hash of {what}")
                )
        if _recompute(rec) != rec.hash:
            problems.append(
                Problem(rec.seq, "hash_mismatch", "stored hash does not match the event's fields")
            )
        prev = rec
        expected = rec.seq + 1
    problems.extend(_head_problems(prev, head))
    problems.sort(key=lambda p: p.seq)
    return problems


def _recompute(rec: EventRecord) -> str | None:
    try:
        return event_hash(
            rec.prev_hash, rec.run_id, rec.seq, rec.ts, rec.type, rec.version, rec.payload
        )
    except (TypeError, ValueError):
        # A payload that no longer encodes cannot match any hash the ledger wrote.
        return None


def _head_problems(last: EventRecord | None, head: RunHead | None) -> list[Problem]:
    last_seq = last.seq if last is not None else 0
    if head is None:
        if last is None:
            return []
        return [Problem(last_seq, "missing_head", "events are stored but the run has no head")]
    if last_seq < head.seq:
        return [
            Problem(
                last_seq + 1,
                "truncated",
                f"head says seq {head.seq} but the last event is seq {last_seq}",
            )
        ]
    if last_seq > head.seq:
        return [
            Problem(
                head.seq + 1, "beyond_head", f"events after the head at seq {head.seq} were stored"
            )
        ]
    if last is not None and last.hash != head.hash:
        return [Problem(head.seq, "head_mismatch", "head hash differs from the last event's hash")]
    return []
