"""Fixtures shared by the ledger tests: one recorder contract, run against every backend.

Tampering reaches under the public API on purpose, the way an attacker or a disk fault
would: raw SQL on the DuckDB file with the recorder closed, or the in-memory containers.
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from ledger import DuckDBRecorder, InMemoryRecorder, Recorder
from ledger.chain import hash_encoded
from ledger.recorder import StoredEvent

BACKENDS = ["memory", "duckdb"]


class MemoryBackend:
    """Tampers by editing the in-memory recorder's containers."""

    def __init__(self) -> None:
        self.recorder = InMemoryRecorder()

    def open(self) -> Recorder:
        return self.recorder

    def _rows(self, run_id: str) -> list[StoredEvent]:
        return self.recorder._events[run_id]

    def edit_payload(
        self, run_id: str, seq: int, payload: dict, *, rehash: bool = False
    ) -> Recorder:
        rows = self._rows(run_id)
        for i, row in enumerate(rows):
            if row.seq == seq:
                rows[i] = _edited(row, payload, rehash=rehash)
        return self.recorder

    def delete(self, run_id: str, keep: Callable[[int], bool]) -> Recorder:
        self._rows(run_id)[:] = [row for row in self._rows(run_id) if keep(row.seq)]
        return self.recorder

    def duplicate(self, run_id: str, seq: int, payload: dict) -> Recorder:
        original = next(row for row in self._rows(run_id) if row.seq == seq)
        self._rows(run_id).append(_edited(original, payload, rehash=True))
        return self.recorder

    def set_head(self, run_id: str, seq: int | None) -> Recorder:
        if seq is None:
            del self.recorder._heads[run_id]
        else:
            row = next(row for row in self._rows(run_id) if row.seq == seq)
            head = self.recorder._heads[run_id]
            self.recorder._heads[run_id] = type(head)(run_id, seq, row.hash, row.ts)
        return self.recorder

    def close(self) -> None:
        self.recorder.close()


class DuckDBBackend:
    """Tampers with raw SQL on the file while no recorder has it open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.recorder: Recorder = DuckDBRecorder(path)
        self._opened: list[Recorder] = [self.recorder]

    def open(self) -> Recorder:
        return self.recorder

    def _sql(self, *statements: tuple[str, list]) -> Recorder:
        self.recorder.close()
        con = duckdb.connect(str(self.path))
        try:
            for sql, params in statements:
                con.execute(sql, params)
        finally:
            con.close()
        self.recorder = DuckDBRecorder(self.path)
        self._opened.append(self.recorder)
        return self.recorder

    def _row(self, run_id: str, seq: int) -> StoredEvent:
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            row = con.execute(
                "SELECT run_id, seq, ts, type, version, payload, prev_hash, hash FROM events "
                "WHERE run_id = ? AND seq = ?",
                [run_id, seq],
            ).fetchall()
        finally:
            con.close()
        assert len(row) == 1
        return StoredEvent(*row[0])

    def edit_payload(
        self, run_id: str, seq: int, payload: dict, *, rehash: bool = False
    ) -> Recorder:
        self.recorder.close()
        row = _edited(self._row(run_id, seq), payload, rehash=rehash)
        return self._sql(
            (
                "UPDATE events SET payload = ?, hash = ? WHERE run_id = ? AND seq = ?",
                [row.payload_json, row.hash, run_id, seq],
            )
        )

    def delete(self, run_id: str, keep: Callable[[int], bool]) -> Recorder:
        self.recorder.close()
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            seqs = [
                r[0]
                for r in con.execute("SELECT seq FROM events WHERE run_id = ?", [run_id]).fetchall()
            ]
        finally:
            con.close()
        gone = [s for s in seqs if not keep(s)]
        return self._sql(
            *[("DELETE FROM events WHERE run_id = ? AND seq = ?", [run_id, s]) for s in gone]
        )

    def duplicate(self, run_id: str, seq: int, payload: dict) -> Recorder:
        self.recorder.close()
        forged = _edited(self._row(run_id, seq), payload, rehash=True)
        # The primary key would refuse the row, so rebuild the table without it first.
        return self._sql(
            ("CREATE TABLE events_loose AS SELECT * FROM events", []),
            ("DROP TABLE events", []),
            ("ALTER TABLE events_loose RENAME TO events", []),
            ("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", list(forged)),
        )

    def set_head(self, run_id: str, seq: int | None) -> Recorder:
        if seq is None:
            return self._sql(("DELETE FROM runs WHERE run_id = ?", [run_id]))
        self.recorder.close()
        row = self._row(run_id, seq)
        return self._sql(
            (
                "UPDATE runs SET head_seq = ?, head_hash = ?, updated_ts = ? WHERE run_id = ?",
                [seq, row.hash, row.ts, run_id],
            )
        )

    def close(self) -> None:
        for recorder in self._opened:
            recorder.close()


def _edited(row: StoredEvent, payload: dict, *, rehash: bool) -> StoredEvent:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    digest = row.hash
    if rehash:
        digest = hash_encoded(
            row.prev_hash, row.run_id, row.seq, row.ts, row.type, row.version, text
        )
    return row._replace(payload_json=text, hash=digest)


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MemoryBackend | DuckDBBackend]:
    backend = (
        MemoryBackend() if request.param == "memory" else DuckDBBackend(tmp_path / "ledger.duckdb")
    )
    yield backend
    backend.close()


@pytest.fixture
def recorder(store: MemoryBackend | DuckDBBackend) -> Recorder:
    return store.open()
