"""Ledger throughput: event appends, bulk call rows, reading calls back.

Run: ``.venv/bin/python bench/ledger.py``. Every number that matters is printed as a ratio
against a baseline measured in the same run, because absolute rates on these machines are
noisy. Sections are plain functions so more can be added (e.g. folding a long run).
"""

import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder heads sys.path and this file's name would shadow the
# ledger package it measures; the project root goes there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402

from ledger import CallRow, DuckDBRecorder, InMemoryRecorder, NewEvent, Recorder  # noqa: E402
from ledger.schema import CALLS_ARROW, DDL  # noqa: E402

CALLS_DDL = next(statement for statement in DDL if "CREATE TABLE calls" in statement)


def best_of(repeats: int, work: Callable[[], float]) -> float:
    """The best rate of ``repeats`` runs: the least disturbed by other load on the machine."""
    return max(work() for _ in range(repeats))


def make_call_rows(n: int, *, run_id: str = "bench", seed: int = 0) -> list[CallRow]:
    """Gateway-shaped rows: ~60 prompt tokens, ~24 completion tokens with logprobs."""
    rng = random.Random(seed)
    messages = json.dumps([{"role": "user", "content": "What is 37 + 45? Answer with a number."}])
    rows = []
    for i in range(n):
        completion = [rng.randrange(49152) for _ in range(24)]
        rows.append(
            CallRow(
                run_id=run_id,
                iteration=i // 1000,
                episode_id=f"ep-{i // 4:06d}",
                call_index=i % 4,
                ts=1.75e9 + i * 0.01,
                harness_commit="3f2a9c" * 6 + "beef",
                adapter_tag=None if i % 3 else "adapter-0002",
                messages_json=messages,
                prompt_ids=[rng.randrange(49152) for _ in range(60)],
                completion_ids=completion,
                logprobs=[-rng.random() * 3 for _ in completion],
                finish_reason="stop",
                latency_ms=rng.uniform(5, 50),
            )
        )
    return rows


# ---- (1) cost of one short write unit ------------------------------------------------------


def bench_write_unit_cost(folder: Path, n: int = 150) -> dict[str, float]:
    """Milliseconds per single-row write transaction, three ways, on the same table."""
    path = folder / "unit.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE t (run_id VARCHAR, seq BIGINT, payload JSON, PRIMARY KEY (run_id, seq))"
    )
    con.close()
    insert = "INSERT INTO t VALUES (?, ?, ?)"

    def per_op(body: Callable[[int], None]) -> float:
        start = time.perf_counter()
        for i in range(n):
            body(i)
        return (time.perf_counter() - start) / n * 1e3

    seq = iter(range(10**9))
    con = duckdb.connect(str(path))
    held = per_op(
        lambda i: (con.begin(), con.execute(insert, ["r", next(seq), "{}"]), con.commit())
    )
    con.close()

    def connect_cycle(i: int) -> None:
        c = duckdb.connect(str(path))
        c.begin()
        c.execute(insert, ["r", next(seq), "{}"])
        c.commit()
        c.close()

    reopened = per_op(connect_cycle)
    mem = duckdb.connect(":memory:")

    def attach_cycle(i: int) -> None:
        mem.execute(f"ATTACH '{path}' AS l")
        mem.begin()
        mem.execute("INSERT INTO l.t VALUES (?, ?, ?)", ["r", next(seq), "{}"])
        mem.commit()
        mem.execute("DETACH l")

    attached = per_op(attach_cycle)
    mem.close()
    return {
        "commit on a held connection": held,
        "connect+commit+close": reopened,
        "attach+commit+detach": attached,
    }


# ---- (2) single-event appends --------------------------------------------------------------


def bench_event_appends(make: Callable[[], Recorder], n: int, batch: int = 1) -> float:
    """Events per second appending ``n`` events, ``batch`` per transaction."""
    payload = {"iteration": 3, "commit": "ab" * 20, "metrics": {"reward": 0.5, "n": 64}}
    with make() as recorder:
        start = time.perf_counter()
        seq = 0
        while seq < n:
            events = [NewEvent("episode_scored", 1, payload)] * batch
            recorder.append("bench", events, expected_seq=seq, ts=time.time())
            seq += batch
        return n / (time.perf_counter() - start)


# ---- (3) bulk call rows --------------------------------------------------------------------


def raw_arrow_insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    arrays = [pa.array(col, type=f.type) for col, f in zip(zip(*rows), CALLS_ARROW, strict=True)]
    con.register("batch", pa.Table.from_arrays(arrays, schema=CALLS_ARROW))
    con.execute("INSERT INTO calls SELECT * FROM batch")
    con.unregister("batch")


def raw_appender_insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    appender = con.appender("calls")
    appender.append_rows(rows)
    appender.flush()


def bench_raw_bulk(folder: Path, batches: list[list[tuple]], insert: Callable) -> float:
    """Rows per second into a held connection: the fastest any caller could go."""
    path = folder / f"raw-{insert.__name__}.duckdb"
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(CALLS_DDL)
    start = time.perf_counter()
    for rows in batches:
        con.begin()
        insert(con, rows)
        con.commit()
    elapsed = time.perf_counter() - start
    con.close()
    return sum(map(len, batches)) / elapsed


def bench_append_calls(folder: Path, batches: list[list[CallRow]]) -> float:
    path = folder / "calls.duckdb"
    for suffix in ("", ".wal", ".lock", ".readers"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with DuckDBRecorder(path) as recorder:
        start = time.perf_counter()
        for rows in batches:
            recorder.append_calls(rows)
        return sum(map(len, batches)) / (time.perf_counter() - start)


# ---- (4) reading calls back ----------------------------------------------------------------


def bench_read_calls(path: Path, expected: int) -> tuple[float, float]:
    """Rows per second through ``read_calls`` and through a raw ``fetchall`` of the table."""
    with DuckDBRecorder(path, read_only=True) as recorder:
        start = time.perf_counter()
        got = recorder.read_calls("bench")
        ours = len(got) / (time.perf_counter() - start)
    assert len(got) == expected
    con = duckdb.connect(str(path), read_only=True)
    start = time.perf_counter()
    raw = con.execute("SELECT * FROM calls ORDER BY iteration, episode_id, call_index").fetchall()
    baseline = len(raw) / (time.perf_counter() - start)
    con.close()
    return ours, baseline


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sia-bench-ledger-") as tmp:
        folder = Path(tmp)

        print("(1) one short write transaction, ms")
        for name, ms in bench_write_unit_cost(folder).items():
            print(f"    {name:<30} {ms:7.2f}")

        print("(2) event appends, events/s")
        mem = best_of(3, lambda: bench_event_appends(InMemoryRecorder, 5000))
        counter = iter(range(100))

        def duck(n: int, batch: int) -> Callable[[], float]:
            return lambda: bench_event_appends(
                lambda: DuckDBRecorder(folder / f"events-{next(counter)}.duckdb"), n, batch
            )

        single = best_of(3, duck(300, 1))
        batched = best_of(3, duck(5000, 100))
        print(f"    in-memory, 1 per append        {mem:10.0f}")
        print(f"    DuckDB,    1 per append        {single:10.0f}   ({1e3 / single:.2f} ms/append)")
        print(f"    DuckDB,  100 per append        {batched:10.0f}")

        print("(3) bulk CallRow writes, rows/s (20 batches)")
        for batch_size in (5000, 500):
            calls = make_call_rows(20 * batch_size)
            batches = [calls[i : i + batch_size] for i in range(0, len(calls), batch_size)]
            tuples = [[tuple(vars_of(r)) for r in b] for b in batches]
            arrow = best_of(3, lambda t=tuples: bench_raw_bulk(folder, t, raw_arrow_insert))
            appender = best_of(3, lambda t=tuples: bench_raw_bulk(folder, t, raw_appender_insert))
            baseline_name, baseline = max(
                ("raw Arrow", arrow), ("raw appender", appender), key=lambda x: x[1]
            )
            ours = best_of(3, lambda b=batches: bench_append_calls(folder, b))
            print(
                f"    batch {batch_size:>5}: raw Arrow {arrow:9.0f}   raw appender {appender:9.0f}"
            )
            print(
                f"                 append_calls {ours:9.0f}   ratio vs {baseline_name} "
                f"{ours / baseline:5.2f}  (target >= 0.8)"
            )

        print("(4) reading calls back, rows/s")
        ours, raw = bench_read_calls(folder / "calls.duckdb", 20 * 500)
        print(f"    read_calls {ours:9.0f}   raw fetchall {raw:9.0f}   ratio {ours / raw:5.2f}")
    print(f"total {time.perf_counter() - started:.1f}s")


def vars_of(row: CallRow) -> list:
    return [getattr(row, name) for name in CALLS_ARROW.names]


if __name__ == "__main__":
    main()
