"""A recorder in plain Python containers: for tests and for dry runs that keep nothing."""

import threading
from array import array
from collections.abc import Sequence
from dataclasses import replace

from ledger.recorder import EventPlan, Recorder, StoredEvent
from ledger.records import CallRow, EpisodeRow, RunHead

__all__ = ["InMemoryRecorder"]


class InMemoryRecorder(Recorder):
    """Same contract as the DuckDB recorder, nothing persisted.

    Rows are stored as copies (payloads as canonical JSON text, lists copied), so callers
    cannot change history by mutating what they passed in or got back.
    """

    def __init__(self) -> None:
        super().__init__(name="in-memory ledger")
        self._lock = threading.Lock()
        self._events: dict[str, list[StoredEvent]] = {}
        self._seqs: dict[str, set[int]] = {}
        self._heads: dict[str, RunHead] = {}
        self._calls: list[CallRow] = []
        self._episodes: list[EpisodeRow] = []

    def _commit_events(self, run_id: str, plan: EventPlan) -> list[StoredEvent]:
        with self._lock:
            rows = plan(self._heads.get(run_id))
            taken = self._seqs.setdefault(run_id, set())
            clashes = [row.seq for row in rows if row.seq in taken]
            if clashes:
                raise self._duplicate(run_id, min(clashes))
            self._events.setdefault(run_id, []).extend(rows)
            taken.update(row.seq for row in rows)
            last = rows[-1]
            self._heads[run_id] = RunHead(run_id, last.seq, last.hash, last.ts)
            return rows

    def _load_events(self, run_id: str, after_seq: int) -> list[StoredEvent]:
        with self._lock:
            rows = self._events.get(run_id, [])
            return sorted((r for r in rows if r.seq > after_seq), key=lambda r: r.seq)

    def _load_chain(self, run_id: str) -> tuple[list[StoredEvent], RunHead | None]:
        with self._lock:
            return list(self._events.get(run_id, [])), self._heads.get(run_id)

    def _load_head(self, run_id: str) -> RunHead | None:
        with self._lock:
            return self._heads.get(run_id)

    def _load_heads(self) -> list[RunHead]:
        with self._lock:
            return [self._heads[k] for k in sorted(self._heads)]

    def _store_calls(self, rows: Sequence[CallRow]) -> None:
        copies = [_copy_call(row) for row in rows]
        with self._lock:
            self._calls.extend(copies)

    def _store_episodes(self, rows: Sequence[EpisodeRow]) -> None:
        with self._lock:
            self._episodes.extend(rows)

    def _load_calls(self, run_id: str, iteration: int | None) -> list[CallRow]:
        with self._lock:
            found = [
                r
                for r in self._calls
                if r.run_id == run_id and (iteration is None or r.iteration == iteration)
            ]
        found.sort(key=lambda r: (r.iteration, r.episode_id, r.call_index))
        return [_copy_call(row) for row in found]

    def _load_episodes(
        self, run_id: str, iteration: int | None, purpose: str | None
    ) -> list[EpisodeRow]:
        with self._lock:
            found = [
                r
                for r in self._episodes
                if r.run_id == run_id
                and (iteration is None or r.iteration == iteration)
                and (purpose is None or r.purpose == purpose)
            ]
        found.sort(key=lambda r: (r.iteration, r.purpose, r.episode_id))
        return found

    def _close(self) -> None:
        with self._lock:
            self._events.clear()
            self._seqs.clear()
            self._heads.clear()
            self._calls.clear()
            self._episodes.clear()


def _copy_call(row: CallRow) -> CallRow:
    # float32 rounding keeps logprobs identical to what the DuckDB FLOAT[] column returns.
    return replace(
        row,
        prompt_ids=list(row.prompt_ids),
        completion_ids=list(row.completion_ids),
        logprobs=array("f", row.logprobs).tolist(),
    )
