"""Counting what a recovery lost or doubled, against what an undisturbed run holds.

Events are compared by what they record, not by sequence number: a resumed run appends
``RunResumed`` and re-plans, so its seqs differ from an undisturbed run's, but each batch,
rollout, decision, commit, tag, verdict and evaluation must be there exactly once. Gaps and
repeated seqs in the hash chain count too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable

from ledger import EpisodeRow, Recorder
from statemachine import events as ev
from statemachine.replay import envelopes
from statemachine.state import Envelope

__all__ = ["RECORDED_ONCE", "difference", "episode_keys", "event_keys", "run_loss"]

#: What a run records once per iteration (``Evaluated`` once per split and candidate).
RECORDED_ONCE: tuple[type, ...] = (
    ev.BatchPlanned,
    ev.RolloutCompleted,
    ev.DecisionMade,
    ev.HarnessCommitted,
    ev.AdapterTagged,
    ev.CandidateAccepted,
    ev.CandidateRejected,
    ev.OutcomeRecorded,
    ev.Evaluated,
)


def difference(expected: Iterable[Hashable], actual: Iterable[Hashable]) -> tuple[int, int]:
    """``(lost, duplicates)``: keys ``expected`` has more often than ``actual``, and fewer."""
    want, have = Counter(expected), Counter(actual)
    return sum((want - have).values()), sum((have - want).values())


def event_keys(history: Iterable[Envelope]) -> list[tuple[str, int, str | None]]:
    """One key per event a run must hold exactly once."""
    return [
        (type(e.event).__name__, e.event.iteration, getattr(e.event, "split", None))
        for e in history
        if isinstance(e.event, RECORDED_ONCE)
    ]


def episode_keys(rows: Iterable[EpisodeRow]) -> list[tuple[int, str, str, str]]:
    """One key per episode result: which iteration, purpose, split and item it scored."""
    return [(row.iteration, row.purpose, row.split, row.item_id) for row in rows]


def run_loss(recorder: Recorder, run_id: str, expected: Iterable[Envelope]) -> tuple[int, int]:
    """``(lost, duplicates)`` of a run's ledger against the history it should hold.

    Seqs missing below the run's head (or its highest seq) count as lost; a seq stored
    more than once counts as a duplicate, even when the rows are identical.
    """
    records = recorder.read(run_id)
    seqs = [r.seq for r in records]
    head = recorder.head(run_id)
    top = max([*seqs, head.seq if head is not None else 0])
    gaps, repeats = top - len(set(seqs)), len(seqs) - len(set(seqs))
    lost, duplicates = difference(event_keys(expected), event_keys(envelopes(records)))
    return lost + gaps, duplicates + repeats
