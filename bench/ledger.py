"""Ledger throughput: event appends, bulk call rows, reading calls back.

Run: ``.venv/bin/python bench/ledger.py``. Every number that matters is printed as a ratio
against a baseline measured in the same run, because absolute rates on these machines are
noisy. Sections are plain functions so more can be added (e.g. folding a long run).
"""

import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from operator import itemgetter
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


def bench_write_unit_cost(folder: Path, per_round: int = 30, rounds: int = 5) -> dict[str, float]:
    """Median milliseconds per one-row write transaction, four ways, interleaved by round.

    A held connection is the floor; reconnecting per transaction is the naive way to let
    other processes in; the recorder attaches the file to a resident in-memory instance.
    """
    path = folder / "unit.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE t (run_id VARCHAR, seq BIGINT, payload JSON, PRIMARY KEY (run_id, seq))"
    )
    con.close()
    insert = "INSERT INTO t VALUES (?, ?, ?)"
    seq = iter(range(1, 10**9))

    def held() -> None:
        held_con.begin()
        held_con.execute(insert, ["r", next(seq), "{}"])
        held_con.commit()

    def reconnect() -> None:
        c = duckdb.connect(str(path))
        c.begin()
        c.execute(insert, ["r", next(seq), "{}"])
        c.commit()
        c.close()

    def attach() -> None:
        mem.execute(f"ATTACH '{path}' AS l")
        mem.begin()
        mem.execute("INSERT INTO l.t VALUES (?, ?, ?)", ["r", next(seq), "{}"])
        mem.commit()
        mem.execute("DETACH l")

    recorder = DuckDBRecorder(folder / "unit-recorder.duckdb")
    event = [NewEvent("tick", 1, {"n": 1})]
    appended = iter(range(10**9))

    def record() -> None:
        recorder.append("r", event, expected_seq=next(appended), ts=time.time())

    ways = {
        "commit on a held connection": held,
        "connect + commit + close": reconnect,
        "attach + commit + detach (checkpoints)": attach,
        "DuckDBRecorder.append (1 event)": record,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    mem = duckdb.connect(":memory:")
    for _ in range(rounds):
        for name, op in ways.items():
            if name == "commit on a held connection":
                held_con = duckdb.connect(str(path))
            start = time.perf_counter()
            for _ in range(per_round):
                op()
            times[name].append((time.perf_counter() - start) / per_round * 1e3)
            if name == "commit on a held connection":
                held_con.close()
    mem.close()
    recorder.close()
    return {name: statistics.median(values) for name, values in times.items()}


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
    columns = [list(map(itemgetter(i), rows)) for i in range(len(CALLS_ARROW))]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, CALLS_ARROW, strict=True)]
    con.register("batch", pa.Table.from_arrays(arrays, schema=CALLS_ARROW))
    con.execute("INSERT INTO calls SELECT * FROM batch")
    con.unregister("batch")


def raw_appender_insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    appender = con.appender("calls")
    appender.append_rows(rows)
    appender.flush()


def bench_raw_bulk(
    folder: Path, batches: list[list[tuple]], insert: Callable, *, count_close: bool
) -> float:
    """Rows per second into one held connection: the fastest any caller could go.

    A held connection leaves its write-ahead log to be checkpointed later, at 16 MiB or at
    close; ``count_close`` includes that final checkpoint, which the recorder pays as it goes.
    """
    path = folder / f"raw-{insert.__name__}.duckdb"
    for suffix in ("", ".wal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(CALLS_DDL)
    start = time.perf_counter()
    for rows in batches:
        con.begin()
        insert(con, rows)
        con.commit()
    if count_close:
        con.close()
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


def bulk_report(folder: Path, batch_size: int, n_batches: int, rounds: int = 4) -> None:
    """Interleave the contenders round by round and report median rates and ratios.

    Interleaving matters more than repetition here: load from other processes comes in
    bursts, and a burst then hits every contender of a round instead of one of them.
    """
    calls = make_call_rows(n_batches * batch_size)
    batches = [calls[i : i + batch_size] for i in range(0, len(calls), batch_size)]
    tuples = [[tuple(getattr(r, name) for name in CALLS_ARROW.names) for r in b] for b in batches]
    contenders: dict[str, Callable[[], float]] = {
        "raw Arrow, WAL only": lambda: bench_raw_bulk(
            folder, tuples, raw_arrow_insert, count_close=False
        ),
        "raw Arrow, incl. checkpoint": lambda: bench_raw_bulk(
            folder, tuples, raw_arrow_insert, count_close=True
        ),
        "raw appender, WAL only": lambda: bench_raw_bulk(
            folder, tuples, raw_appender_insert, count_close=False
        ),
        "append_calls": lambda: bench_append_calls(folder, batches),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            rates[name].append(run())
    ours = rates["append_calls"]
    print(f"    {n_batches} batches of {batch_size} rows, median of {rounds} interleaved rounds")
    for name, values in rates.items():
        line = f"      {name:<28} {statistics.median(values):9.0f}"
        if name != "append_calls":
            ratio = statistics.median(o / r for o, r in zip(ours, values, strict=True))
            line += f"   append_calls / this = {ratio:4.2f}"
        print(line)
    fastest = max(
        ("raw Arrow, WAL only", "raw appender, WAL only"),
        key=lambda name: statistics.median(rates[name]),
    )
    ratio = statistics.median(o / r for o, r in zip(ours, rates[fastest], strict=True))
    print(f"      => append_calls / fastest raw ({fastest}) = {ratio:4.2f}  (target >= 0.8)")


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


# ---- (5) replaying a run: read, decode and fold 100k events -------------------------------


def bench_fold(folder: Path, n_events: int = 100_000) -> None:
    """Time to rebuild a run's state from 100k stored events (target: decode+fold < 1 s)."""
    from statemachine.codec import encode
    from statemachine.replay import envelopes
    from statemachine.state import fold
    from tests.support.scripted import simulate

    envs = simulate("fold", iterations=n_events // 12 + 1, mode="w+h")[:n_events]
    path = folder / "fold.duckdb"
    with DuckDBRecorder(path) as recorder:
        for start in range(0, len(envs), 5000):
            chunk = envs[start : start + 5000]
            recorder.append(
                "fold",
                [NewEvent(*encode(e.event)) for e in chunk],
                expected_seq=start,
                ts=time.time(),
            )
    with DuckDBRecorder(path, read_only=True) as recorder:
        t0 = time.perf_counter()
        records = recorder.read("fold")
        t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = envelopes(records)
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = fold("fold", decoded)
    t_fold = time.perf_counter() - t0
    assert state.last_seq == len(envs)
    print(f"    {len(envs)} events, {len(state.iterations)} iterations")
    print(f"    read from DuckDB {t_read:6.3f} s   decode {t_decode:6.3f} s   fold {t_fold:6.3f} s")
    print(
        f"      => decode+fold {t_decode + t_fold:6.3f} s  (target < 1 s); "
        f"with read {t_read + t_decode + t_fold:6.3f} s"
    )


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sia-bench-ledger-") as tmp:
        folder = Path(tmp)

        print("(1) one short write transaction, ms (median of interleaved rounds)")
        for name, ms in bench_write_unit_cost(folder).items():
            print(f"    {name:<40} {ms:7.2f}")

        print("(2) event appends, events/s")
        mem = best_of(3, lambda: bench_event_appends(InMemoryRecorder, 5000))
        counter = iter(range(100))

        def duck(n: int, batch: int) -> Callable[[], float]:
            return lambda: bench_event_appends(
                lambda: DuckDBRecorder(folder / f"events-{next(counter)}.duckdb"), n, batch
            )

        single = best_of(3, duck(200, 1))
        batched = best_of(3, duck(5000, 100))
        print(f"    in-memory, 1 per append        {mem:10.0f}")
        print(f"    DuckDB,    1 per append        {single:10.0f}   ({1e3 / single:.2f} ms/append)")
        print(f"    DuckDB,  100 per append        {batched:10.0f}")

        print("(3) bulk CallRow writes, rows/s")
        bulk_report(folder, 5000, 4)
        bulk_report(folder, 500, 20)

        print("(4) reading calls back, rows/s")
        ours, raw = bench_read_calls(folder / "calls.duckdb", 20 * 500)
        print(f"    read_calls {ours:9.0f}   raw fetchall {raw:9.0f}   ratio {ours / raw:5.2f}")
        print("(5) replay 100k events")
        bench_fold(folder)
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
