"""The DuckDB-backed recorder: one database file per workspace.

DuckDB lets one process hold a file read-write, and while it does no other process can
open the file at all, not even read-only. So no recorder keeps the file open: each unit of
work (one transaction, or one read) attaches the file to the recorder's private in-memory
DuckDB instance, runs, and detaches it. Attaching costs about a millisecond where a fresh
``duckdb.connect`` costs about ten, which keeps the windows in which others are locked out
short. Whoever finds the file held retries with jittered backoff until ``busy_timeout``.

Commits are durable in the write-ahead log. The writer folds the log into the file every
``_CHECKPOINT_EVERY`` writes or ``_CHECKPOINT_WAL_SIZE`` of log, and at close, rather than
at every detach.

Single-writer is enforced separately, by ``WriterLock``. Within one process, a per-file
lock serialises units of work, because DuckDB's file locks only exclude other processes.
"""

import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from ledger.errors import LedgerBusy, LedgerCorrupt, LedgerError, LedgerNotFound, UnsupportedSchema
from ledger.locks import ReadersWaiting, WriterLock
from ledger.recorder import EventPlan, Recorder, StoredEvent
from ledger.records import CallRow, EpisodeRow, RunHead
from ledger.schema import (
    CALLS_ARROW,
    DDL,
    EPISODES_ARROW,
    EVENTS_ARROW,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES,
)

__all__ = ["DuckDBRecorder"]

_ALIAS = "ledger"
_VALUES_MAX_ROWS = 32
_BATCH = "_sia_batch"
# Never reach for the network to fetch an extension: the ledger must work offline.
_CONFIG = {"autoinstall_known_extensions": False}
# Lock windows are a few milliseconds, so waiters poll often rather than sleep long.
_BACKOFF_FIRST = 0.0005
_BACKOFF_MAX = 0.002
# The writer checkpoints every few writes, or once the write-ahead log passes a size, not
# at every detach: a checkpoint costs several fsyncs (a few ms), while every attach replays
# the log at ~0.1 ms per logged transaction plus ~2 ms per MiB. DuckDB applies the size
# rule itself, and then writes a large commit straight into the file, skipping the log.
_CHECKPOINT_EVERY = 8
_CHECKPOINT_WAL_SIZE = "1MiB"
# The longest a writer defers to waiting readers before each unit of work.
_WRITER_YIELD = 0.05
# What DuckDB says when a block it reads is damaged (checksum) or cut off (truncated file).
_DAMAGE = ("Corrupt database file", "Could not read enough bytes")

# Column by column: several times faster than building row tuples and transposing them.
_CALL_COLUMNS = [attrgetter(name) for name in CALLS_ARROW.names]
_EPISODE_COLUMNS = [attrgetter(name) for name in EPISODES_ARROW.names]

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(path: Path) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(str(path), threading.Lock())


class DuckDBRecorder(Recorder):
    """A ledger in the DuckDB file at ``path``.

    A writer (the default) creates the file if needed and holds ``<path>.lock`` until
    ``close()``; a second writer gets ``LedgerBusy``. ``read_only=True`` opens an existing
    ledger for reading and can run alongside a live writer. Every committed append is
    durable: DuckDB syncs its write-ahead log on commit.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, read_only: bool = False, busy_timeout: float = 30.0
    ) -> None:
        self._path = Path(os.path.abspath(path))
        super().__init__(name=f"ledger {self._path}", read_only=read_only)
        self._busy_timeout = float(busy_timeout)
        self._thread_lock = _process_lock(self._path)
        self._writer_lock: WriterLock | None = None
        self._instance: duckdb.DuckDBPyConnection | None = None
        self._unfolded = 0
        self._readers = ReadersWaiting(self._path.with_name(self._path.name + ".readers"))
        if read_only:
            if not self._path.exists():
                raise LedgerNotFound(f"no ledger at {self._path}")
        else:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer_lock = WriterLock(
                self._path.with_name(self._path.name + ".lock"), self._path
            )
        self._ready = False
        try:
            with self._connect() as con:
                self._prepare(con)
        except BaseException:
            self._close()
            raise
        self._ready = True

    @property
    def path(self) -> Path:
        return self._path

    # ---- events -------------------------------------------------------------------------

    def _commit_events(self, run_id: str, plan: EventPlan) -> list[StoredEvent]:
        with self._connect(write=True) as con:
            con.begin()
            try:
                head = _head(con, run_id)
                rows = plan(head)
                if len(rows) <= _VALUES_MAX_ROWS:
                    # One multi-row VALUES statement beats building an Arrow batch for a few
                    # events (the common case: one event per append).
                    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
                    con.execute(f"INSERT INTO events VALUES {values}", list(chain(*rows)))
                else:
                    columns = list(zip(*rows, strict=True))
                    _insert(con, "events", _arrow_batch("events", EVENTS_ARROW, columns))
                last = rows[-1]
                # The head was read in this transaction, so INSERT or UPDATE is known; an
                # upsert would cost more.
                if head is None:
                    con.execute(
                        "INSERT INTO runs VALUES (?, ?, ?, ?)",
                        [run_id, last.seq, last.hash, last.ts],
                    )
                else:
                    con.execute(
                        "UPDATE runs SET head_seq = ?, head_hash = ?, updated_ts = ? "
                        "WHERE run_id = ?",
                        [last.seq, last.hash, last.ts, run_id],
                    )
                con.commit()
            except duckdb.ConstraintException:
                _rollback(con)
                taken = _one(
                    con,
                    "SELECT min(seq) FROM events WHERE run_id = ? AND seq BETWEEN ? AND ?",
                    [run_id, rows[0].seq, rows[-1].seq],
                )
                if taken is None or taken[0] is None:
                    raise
                raise self._duplicate(run_id, taken[0]) from None
            except BaseException:
                _rollback(con)
                raise
            return rows

    def _load_events(self, run_id: str, after_seq: int) -> list[StoredEvent]:
        with self._connect() as con:
            return _events(con, run_id, after_seq)

    def _load_chain(self, run_id: str) -> tuple[list[StoredEvent], RunHead | None]:
        # One connection is one snapshot: no writer can commit while it is open.
        with self._connect() as con:
            return _events(con, run_id, None), _head(con, run_id)

    def _load_head(self, run_id: str) -> RunHead | None:
        with self._connect() as con:
            return _head(con, run_id)

    def _load_heads(self) -> list[RunHead]:
        with self._connect() as con:
            rows = con.execute(
                "SELECT run_id, head_seq, head_hash, updated_ts FROM runs ORDER BY run_id"
            ).fetchall()
        return [RunHead(*row) for row in rows]

    # ---- bulk rows ----------------------------------------------------------------------

    def _store_calls(self, rows: Sequence[CallRow]) -> None:
        columns = [list(map(field, rows)) for field in _CALL_COLUMNS]
        batch = _arrow_batch("calls", CALLS_ARROW, columns)
        with self._connect(write=True) as con:
            _insert(con, "calls", batch)

    def _store_episodes(self, rows: Sequence[EpisodeRow]) -> None:
        columns = [list(map(field, rows)) for field in _EPISODE_COLUMNS]
        batch = _arrow_batch("episodes", EPISODES_ARROW, columns)
        with self._connect(write=True) as con:
            _insert(con, "episodes", batch)

    def _load_calls(self, run_id: str, iteration: int | None) -> list[CallRow]:
        where, params = _filters(run_id, iteration=iteration)
        query = f"SELECT * FROM calls WHERE {where} ORDER BY iteration, episode_id, call_index"
        return [CallRow(*row) for row in self._select_columns(query, params)]

    def _load_episodes(
        self, run_id: str, iteration: int | None, purpose: str | None
    ) -> list[EpisodeRow]:
        where, params = _filters(run_id, iteration=iteration, purpose=purpose)
        query = f"SELECT * FROM episodes WHERE {where} ORDER BY iteration, purpose, episode_id"
        return [EpisodeRow(*row) for row in self._select_columns(query, params)]

    def _select_columns(self, query: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        # Column-wise conversion from Arrow beats DuckDB's row-wise fetchall for list columns.
        with self._connect() as con:
            table = con.sql(query, params=params).to_arrow_table()
        return zip(*(column.to_pylist() for column in table.columns), strict=True)

    # ---- connections --------------------------------------------------------------------

    def _close(self) -> None:
        if self._ready and not self.read_only and self._wal_bytes() > 0:
            # Fold the log into the file so a closed ledger is one self-contained file.
            # Best effort: the log is durable, and the next writer or reader replays it.
            with suppress(LedgerError), self._connect() as con:
                con.execute("CHECKPOINT")
        with self._thread_lock:
            self._drop_instance()
        self._readers.close()
        self._release_writer_lock()

    def _release_writer_lock(self) -> None:
        if self._writer_lock is not None:
            self._writer_lock.release()
            self._writer_lock = None

    @contextmanager
    def _connect(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The ledger file attached for one short unit of work, errors translated."""
        with self._thread_lock:
            try:
                con = self._attach()
            except BaseException as exc:
                # Interrupted half-way (Ctrl-C): closing the instance lets go of the file,
                # where a dangling attachment would refuse every later unit of work.
                self._drop_instance()
                _raise_interrupt(exc)
                raise
            try:
                yield con
            except (duckdb.Error, RuntimeError) as exc:
                _raise_interrupt(exc)
                if isinstance(exc, RuntimeError):
                    raise
                raise self._translate(exc) from exc
            finally:
                try:
                    self._detach(con, wrote=write)
                except BaseException:
                    self._drop_instance()
                    raise

    def _attach(self) -> duckdb.DuckDBPyConnection:
        if self._instance is None:
            self._instance = duckdb.connect(":memory:", config=_CONFIG)
            if not self.read_only:
                self._instance.execute("SET checkpoint_on_detach = 'DISABLED'")
                self._instance.execute(f"SET wal_autocheckpoint = '{_CHECKPOINT_WAL_SIZE}'")
        con = self._instance
        mode = " (READ_ONLY)" if self.read_only else ""
        attach = f"ATTACH {_sql_string(str(self._path))} AS {_ALIAS}{mode}"
        if not self.read_only:
            self._readers.yield_to_readers(_WRITER_YIELD, _BACKOFF_FIRST)
        try:
            con.execute(attach)
        except duckdb.Error as exc:
            message = _first_line(exc)
            if not _is_lock_conflict(message):
                raise self._translate_open(exc, message) from exc
            if self.read_only:
                with self._readers.raised():
                    self._attach_when_free(con, attach)
            else:
                self._attach_when_free(con, attach)
        con.execute(f"USE {_ALIAS}")
        return con

    def _attach_when_free(self, con: duckdb.DuckDBPyConnection, attach: str) -> None:
        deadline = time.monotonic() + self._busy_timeout
        delay = _BACKOFF_FIRST
        while True:
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, _BACKOFF_MAX)
            try:
                con.execute(attach)
                return
            except duckdb.Error as exc:
                message = _first_line(exc)
                if not _is_lock_conflict(message):
                    raise self._translate_open(exc, message) from exc
                if time.monotonic() >= deadline:
                    raise LedgerBusy(
                        f"{self._name} stayed locked by {_holder(message)} "
                        f"for {self._busy_timeout:g}s"
                    ) from exc

    def _detach(self, con: duckdb.DuckDBPyConnection, *, wrote: bool) -> None:
        try:
            if wrote:
                self._unfolded += 1
                if self._unfolded >= _CHECKPOINT_EVERY:
                    con.execute("CHECKPOINT")
                    self._unfolded = 0
            con.execute("USE memory")
            con.execute(f"DETACH {_ALIAS}")
        except duckdb.Error:
            # Closing the whole instance is the sure way to let go of the file.
            self._drop_instance()

    def _wal_bytes(self) -> int:
        try:
            return os.stat(f"{self._path}.wal").st_size
        except OSError:
            return 0

    def _drop_instance(self) -> None:
        if self._instance is not None:
            with suppress(duckdb.Error):
                self._instance.close()
            self._instance = None

    def _translate_open(self, exc: duckdb.Error, message: str) -> LedgerError:
        if "does not exist" in message:
            return LedgerNotFound(f"no ledger at {self._path}")
        if "Permission denied" in message:
            return LedgerError(f"cannot open {self._name}: {message}")
        return LedgerCorrupt(f"{self._path}: not a readable SIA ledger ({message})")

    def _translate(self, exc: duckdb.Error) -> LedgerError:
        message = _first_line(exc)
        # A damaged block shows only when a query reads it: word it like damage found on
        # open, so a truncated or zeroed file reads the same whichever block it hit first.
        damaged = any(sign in message for sign in _DAMAGE)
        if isinstance(exc, duckdb.CatalogException | duckdb.BinderException) or damaged:
            return LedgerCorrupt(f"{self._path}: not a readable SIA ledger ({message})")
        return LedgerError(f"{self._name}: {message}")

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> None:
        """Create the schema in an empty file; refuse files that are not our schema."""
        tables = {
            row[0]
            for row in con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        }
        if "meta" not in tables:
            if tables or self.read_only:
                raise LedgerCorrupt(f"{self._path}: not a readable SIA ledger (no meta table)")
            con.begin()
            for statement in DDL:
                con.execute(statement)
            con.execute(
                "INSERT INTO meta VALUES ('schema_version', ?), ('created_ts', ?)",
                [str(SCHEMA_VERSION), repr(time.time())],
            )
            con.commit()
            return
        row = _one(con, "SELECT value FROM meta WHERE key = 'schema_version'")
        version = int(row[0]) if row is not None and str(row[0]).isdigit() else None
        if version is None:
            raise LedgerCorrupt(f"{self._path}: not a readable SIA ledger (no schema version)")
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(
                f"ledger {self._path} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this SIA understands; upgrade SIA to open it"
            )
        missing = sorted(set(TABLES) - tables)
        if missing or version < 1:
            detail = f"missing tables {', '.join(missing)}" if missing else f"schema {version}"
            raise LedgerCorrupt(f"{self._path}: not a readable SIA ledger ({detail})")
        if version < SCHEMA_VERSION and not self.read_only:
            self._migrate(con, version)

    def _migrate(self, con: duckdb.DuckDBPyConnection, version: int) -> None:
        con.begin()
        for step in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[step]:
                con.execute(statement)
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)])
        con.commit()


def _events(
    con: duckdb.DuckDBPyConnection, run_id: str, after_seq: int | None
) -> list[StoredEvent]:
    query = (
        "SELECT run_id, seq, ts, type, version, payload, prev_hash, hash FROM events "
        "WHERE run_id = ?"
    )
    params: list[Any] = [run_id]
    if after_seq is not None:
        query += " AND seq > ?"
        params.append(after_seq)
    rows = con.execute(query + " ORDER BY seq", params).fetchall()
    return [StoredEvent(*row) for row in rows]


def _head(con: duckdb.DuckDBPyConnection, run_id: str) -> RunHead | None:
    row = _one(
        con, "SELECT run_id, head_seq, head_hash, updated_ts FROM runs WHERE run_id = ?", [run_id]
    )
    return RunHead(*row) if row is not None else None


def _one(
    con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None
) -> tuple[Any, ...] | None:
    # fetchall, not fetchone: DuckDB refuses further statements on a connection whose
    # last result was not read to the end.
    rows = con.execute(query, params).fetchall()
    return rows[0] if rows else None


def _arrow_batch(table: str, schema: pa.Schema, columns: Sequence[Sequence[Any]]) -> pa.Table:
    try:
        arrays = [
            pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)
        ]
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise LedgerError(f"rows for table {table} do not fit its columns ({exc})") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def _insert(con: duckdb.DuckDBPyConnection, table: str, batch: pa.Table) -> None:
    """Insert a whole Arrow batch in one statement."""
    con.register(_BATCH, batch)
    con.execute(f"INSERT INTO {table} SELECT * FROM {_BATCH}")
    # Only after success: in an aborted transaction unregister fails and would mask the
    # real error; a later register replaces a leftover view anyway.
    con.unregister(_BATCH)


def _filters(run_id: str, **optional: Any) -> tuple[str, list[Any]]:
    clauses, params = ["run_id = ?"], [run_id]
    for column, value in optional.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(clauses), params


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    # Closing the connection rolls back anyway; this only makes it explicit and early.
    with suppress(duckdb.Error):
        con.rollback()


def _raise_interrupt(exc: BaseException) -> None:
    """DuckDB turns a signal that arrives mid-query into an error of its own; raise the
    ``KeyboardInterrupt`` it stands for, so a stopped run is seen as stopped, not broken."""
    interrupted = isinstance(exc, duckdb.InterruptException) or (
        isinstance(exc, RuntimeError) and "interrupted" in str(exc).lower()
    )
    if interrupted:
        context = exc.__context__
        raise (context if isinstance(context, KeyboardInterrupt) else KeyboardInterrupt()) from exc


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_lock_conflict(message: str) -> bool:
    return "Conflicting lock" in message or "Could not set lock" in message


def _holder(message: str) -> str:
    marker = "(PID "
    start = message.find(marker)
    if start < 0:
        return "another process"
    pid = message[start + len(marker) :].split(")", 1)[0]
    return f"pid {pid}" if pid.isdigit() else "another process"
