"""The recorder interface, with the logic every backend shares.

Seq assignment, hashing, the optimistic-concurrency check and payload encoding live here,
once; a backend only stores and loads rows, each write as one atomic transaction.
"""

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import NamedTuple, Self

from ledger.chain import GENESIS, canonical_json, hash_encoded, verify_chain
from ledger.errors import (
    ConcurrencyConflict,
    DuplicateEvent,
    LedgerCorrupt,
    LedgerError,
    RunNotFound,
)
from ledger.records import CallRow, EpisodeRow, EventRecord, NewEvent, RunHead, VerifyReport

__all__ = ["EventPlan", "Recorder", "StoredEvent"]


class StoredEvent(NamedTuple):
    """An event row exactly as a backend stores it: the payload is canonical JSON text."""

    run_id: str
    seq: int
    ts: float
    type: str
    version: int
    payload_json: str
    prev_hash: str
    hash: str


# Given the run's head as the open transaction sees it, the rows to write; raises
# ConcurrencyConflict if the head is not where the caller expected it.
EventPlan = Callable[[RunHead | None], list[StoredEvent]]


class Recorder(ABC):
    """An append-only, hash-chained event store with bulk trajectory tables.

    One writer per ledger; any number of readers. Every method is safe to call from several
    threads. Use as a context manager or call ``close()``.
    """

    def __init__(self, *, name: str, read_only: bool = False) -> None:
        self._name = name
        self._read_only = read_only
        self._closed = False

    @property
    def read_only(self) -> bool:
        return self._read_only

    # ---- events -------------------------------------------------------------------------

    def append(
        self, run_id: str, events: Sequence[NewEvent], *, expected_seq: int, ts: float
    ) -> list[EventRecord]:
        """Append ``events`` to ``run_id`` in one transaction and return them as stored.

        ``expected_seq`` is the last seq the caller has seen (0 for a new run); the events
        get seqs ``expected_seq + 1`` onwards and all carry time ``ts`` (unix seconds).
        Raises ``ConcurrencyConflict`` if the run has moved past ``expected_seq`` and
        ``DuplicateEvent`` if one of the new seqs is already stored.
        """
        self._check_writable()
        events = list(events)
        if not events:
            return []
        _check_run_id(run_id)
        if isinstance(expected_seq, bool) or not isinstance(expected_seq, int) or expected_seq < 0:
            raise ValueError(f"expected_seq must be an int >= 0, got {expected_seq!r}")
        ts = float(ts)
        if not math.isfinite(ts):
            raise ValueError(f"event time must be finite, got {ts!r}")
        encoded = [(e.type, e.version, _encode_payload(e)) for e in events]

        def plan(head: RunHead | None) -> list[StoredEvent]:
            current = head.seq if head is not None else 0
            if current != expected_seq:
                raise ConcurrencyConflict(
                    f"run {run_id!r} is at seq {current}, "
                    f"but the append expected seq {expected_seq}"
                )
            prev = head.hash if head is not None else GENESIS
            rows = []
            for seq, (type_, version, payload_json) in enumerate(encoded, start=expected_seq + 1):
                digest = hash_encoded(prev, run_id, seq, ts, type_, version, payload_json)
                rows.append(
                    StoredEvent(run_id, seq, ts, type_, version, payload_json, prev, digest)
                )
                prev = digest
            return rows

        return [_decode(row) for row in self._commit_events(run_id, plan)]

    def read(self, run_id: str, after_seq: int = 0) -> list[EventRecord]:
        """The run's events with seq > ``after_seq``, in seq order.

        Raises ``RunNotFound`` when reading a run from the start and it has no events.
        """
        self._check_open()
        rows = self._load_events(run_id, after_seq)
        if not rows and after_seq <= 0:
            raise RunNotFound(f"no run {run_id!r} in {self._name}")
        return [_decode(row) for row in rows]

    def head(self, run_id: str) -> RunHead | None:
        """The run's last event, or ``None`` if the run has none."""
        self._check_open()
        return self._load_head(run_id)

    def heads(self) -> list[RunHead]:
        """The last event of every run, ordered by run id."""
        self._check_open()
        return self._load_heads()

    def verify(self, run_id: str) -> VerifyReport:
        """Check the run's stored rows, duplicates and gaps included, against its head."""
        self._check_open()
        rows, head = self._load_chain(run_id)
        if not rows and head is None:
            raise RunNotFound(f"no run {run_id!r} in {self._name}")
        problems = verify_chain(run_id, [_decode_lenient(row) for row in rows], head)
        return VerifyReport(
            run_id=run_id,
            n_events=len(rows),
            head_seq=head.seq if head is not None else 0,
            problems=tuple(problems),
        )

    # ---- bulk trajectory rows -----------------------------------------------------------

    def append_calls(self, rows: Sequence[CallRow]) -> None:
        """Store model-call rows in one bulk write."""
        self._check_writable()
        if rows:
            self._store_calls(rows)

    def append_episodes(self, rows: Sequence[EpisodeRow]) -> None:
        """Store episode rows in one bulk write."""
        self._check_writable()
        if rows:
            self._store_episodes(rows)

    def read_calls(self, run_id: str, iteration: int | None = None) -> list[CallRow]:
        """The run's calls, by (iteration, episode_id, call_index)."""
        self._check_open()
        return self._load_calls(run_id, iteration)

    def read_episodes(
        self, run_id: str, iteration: int | None = None, purpose: str | None = None
    ) -> list[EpisodeRow]:
        """The run's episodes, by (iteration, purpose, episode_id)."""
        self._check_open()
        return self._load_episodes(run_id, iteration, purpose)

    # ---- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Release the recorder's resources; later calls raise ``LedgerError``."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "writer"
        state = ", closed" if self._closed else ""
        return f"<{type(self).__name__} {self._name} ({mode}{state})>"

    def _check_open(self) -> None:
        if self._closed:
            raise LedgerError(f"{self._name} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._read_only:
            raise LedgerError(f"{self._name} was opened read-only")

    def _duplicate(self, run_id: str, seq: int) -> DuplicateEvent:
        return DuplicateEvent(f"run {run_id!r} already has an event at seq {seq} in {self._name}")

    # ---- storage, per backend -----------------------------------------------------------

    @abstractmethod
    def _commit_events(self, run_id: str, plan: EventPlan) -> list[StoredEvent]:
        """In one transaction: load the head, call ``plan``, store its rows and the new head.

        Nothing is written if ``plan`` raises. A row whose (run_id, seq) exists raises
        ``self._duplicate(run_id, seq)`` for the lowest such seq. Returns the rows written.
        """

    @abstractmethod
    def _load_events(self, run_id: str, after_seq: int) -> list[StoredEvent]:
        """Stored rows of the run with seq > ``after_seq``, by seq."""

    @abstractmethod
    def _load_chain(self, run_id: str) -> tuple[list[StoredEvent], RunHead | None]:
        """All stored rows of the run (duplicates included) and its head, from one snapshot."""

    @abstractmethod
    def _load_head(self, run_id: str) -> RunHead | None: ...

    @abstractmethod
    def _load_heads(self) -> list[RunHead]: ...

    @abstractmethod
    def _store_calls(self, rows: Sequence[CallRow]) -> None: ...

    @abstractmethod
    def _store_episodes(self, rows: Sequence[EpisodeRow]) -> None: ...

    @abstractmethod
    def _load_calls(self, run_id: str, iteration: int | None) -> list[CallRow]: ...

    @abstractmethod
    def _load_episodes(
        self, run_id: str, iteration: int | None, purpose: str | None
    ) -> list[EpisodeRow]: ...

    @abstractmethod
    def _close(self) -> None: ...


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")


def _encode_payload(event: NewEvent) -> str:
    try:
        return canonical_json(event.payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event {event.type}: payload is not JSON-encodable ({exc})") from exc


def _decode(row: StoredEvent) -> EventRecord:
    try:
        payload = json.loads(row.payload_json)
    except ValueError as exc:
        raise LedgerCorrupt(
            f"run {row.run_id!r} seq {row.seq}: stored payload is not JSON ({exc})"
        ) from exc
    return EventRecord(
        run_id=row.run_id,
        seq=row.seq,
        ts=row.ts,
        type=row.type,
        version=row.version,
        payload=payload,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


def _decode_lenient(row: StoredEvent) -> EventRecord:
    # Verification must report a mangled payload, not stop at it: the raw text stands in
    # for the payload and then fails its hash check at this seq.
    try:
        return _decode(row)
    except LedgerCorrupt:
        return EventRecord(
            row.run_id,
            row.seq,
            row.ts,
            row.type,
            row.version,
            row.payload_json,  # type: ignore[arg-type]
            row.prev_hash,
            row.hash,
        )
