"""DuckDB-only behaviour: files, locks, other processes, durability, foreign files."""

import dataclasses
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from ledger import (
    DuckDBRecorder,
    EpisodeRow,
    LedgerBusy,
    LedgerCorrupt,
    LedgerError,
    LedgerNotFound,
    NewEvent,
    UnsupportedSchema,
)

ROOT = Path(__file__).resolve().parents[2]


def tick(n: int) -> list[NewEvent]:
    return [NewEvent("tick", 1, {"n": n})]


def python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ws" / "ledger.duckdb"


def test_reopen_after_close_keeps_everything(path: Path) -> None:
    with DuckDBRecorder(path) as writer:
        written = writer.append("r1", tick(1) + tick(2), expected_seq=0, ts=1.0)
        writer.append_episodes(
            [EpisodeRow("r1", 0, "eval", "val", "e", "i", 1.0, "ok", "", 1, 5.0)]
        )
    with DuckDBRecorder(path, read_only=True) as reader:
        assert reader.read("r1") == written
        assert reader.verify("r1").ok
        assert len(reader.read_episodes("r1")) == 1
    with DuckDBRecorder(path) as writer:
        assert writer.append("r1", tick(3), expected_seq=2, ts=2.0)[0].seq == 3


def test_schema_2_episodes_read_without_answers_and_a_writer_adds_the_column(path: Path) -> None:
    row = EpisodeRow("r1", 0, "eval", "val", "e", "i", 1.0, "ok", "", 1, 5.0, answer="42")
    with DuckDBRecorder(path) as writer:
        writer.append_episodes([row])
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE episodes DROP COLUMN reward_detail")
    con.execute("ALTER TABLE episodes DROP COLUMN answer")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.close()
    with DuckDBRecorder(path, read_only=True) as reader:
        (old,) = reader.read_episodes("r1")
    assert old.answer is None and old.reward == 1.0
    with DuckDBRecorder(path) as writer:
        writer.append_episodes(
            [EpisodeRow("r1", 0, "eval", "val", "f", "i", 0.0, "ok", "", 1, 5.0)]
        )
        writer.append_episodes([dataclasses.replace(row, episode_id="g")])
        answers = [r.answer for r in writer.read_episodes("r1")]
    assert answers == [None, None, "42"]


def test_schema_3_episodes_read_without_reward_detail_and_a_writer_adds_it(path: Path) -> None:
    detail = '{"correct": true, "speedup": 1.5}'
    row = EpisodeRow("r1", 0, "eval", "val", "e", "i", 0.8, "ok", "", 1, 5.0, "code", detail)
    with DuckDBRecorder(path) as writer:
        writer.append_episodes([row])
        assert writer.read_episodes("r1") == [row]
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE episodes DROP COLUMN reward_detail")
    con.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    con.close()
    with DuckDBRecorder(path, read_only=True) as reader:
        (old,) = reader.read_episodes("r1")
    assert old == dataclasses.replace(row, reward_detail=None)
    with DuckDBRecorder(path) as writer:
        writer.append_episodes([dataclasses.replace(row, episode_id="f")])
        details = [r.reward_detail for r in writer.read_episodes("r1")]
    assert details == [None, detail]


def test_second_writer_is_refused_with_the_holders_pid(path: Path) -> None:
    with DuckDBRecorder(path):
        with pytest.raises(LedgerBusy, match=f"is being written by pid {os.getpid()}"):
            DuckDBRecorder(path)
        with DuckDBRecorder(path, read_only=True) as reader:
            assert reader.heads() == []
    with DuckDBRecorder(path) as writer:
        writer.append("r1", tick(1), expected_seq=0, ts=1.0)


def test_read_only_recorder_refuses_writes(path: Path) -> None:
    DuckDBRecorder(path).close()
    with (
        DuckDBRecorder(path, read_only=True) as reader,
        pytest.raises(LedgerError, match="read-only"),
    ):
        reader.append("r1", tick(1), expected_seq=0, ts=1.0)


def test_missing_file_read_only_is_not_found(path: Path) -> None:
    with pytest.raises(LedgerNotFound, match="no ledger at"):
        DuckDBRecorder(path, read_only=True)
    assert not path.exists()


@pytest.mark.parametrize("read_only", [False, True], ids=["writer", "reader"])
@pytest.mark.parametrize("content", [b"", b"garbage " * 4096], ids=["empty", "garbage"])
def test_garbage_file_is_corrupt(path: Path, content: bytes, read_only: bool) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(LedgerCorrupt, match=r"not a readable SIA ledger \(") as caught:
        DuckDBRecorder(path, read_only=read_only)
    assert str(caught.value).startswith(str(path))
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == content
    # A failed writer must not keep the writer lock.
    with pytest.raises(LedgerCorrupt):
        DuckDBRecorder(path)


def test_foreign_duckdb_database_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE something_else (x INTEGER)")
    con.close()
    with pytest.raises(LedgerCorrupt, match="no meta table"):
        DuckDBRecorder(path)


def test_newer_schema_is_refused(path: Path) -> None:
    DuckDBRecorder(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(UnsupportedSchema, match="schema version 99"):
        DuckDBRecorder(path, read_only=True)


def test_schema_1_ledger_is_read_as_is_and_upgraded_by_a_writer(path: Path) -> None:
    from dataclasses import replace

    from tests.ledger.test_ledger_contract import call

    with DuckDBRecorder(path) as rec:
        rec.append_calls([call("e1", 0)])
    # What a schema-1 file looks like: no completion_text column, version 1.
    con = duckdb.connect(str(path))
    for column in ("completion_text", "temperature", "top_p"):
        con.execute(f"ALTER TABLE calls DROP COLUMN {column}")
    con.execute("ALTER TABLE episodes DROP COLUMN reward_detail")  # schema 4
    con.execute("ALTER TABLE episodes DROP COLUMN answer")  # schema 3
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with DuckDBRecorder(path, read_only=True) as reader:
        (old,) = reader.read_calls("r1")
    assert old == replace(call("e1", 0), completion_text="", temperature=None, top_p=None)
    with DuckDBRecorder(path) as writer:
        writer.append_calls([replace(call("e2", 0), completion_text="85")])
        texts = [row.completion_text for row in writer.read_calls("r1")]
    assert texts == ["", "85"]
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)
    con.close()


def test_missing_table_is_corrupt(path: Path) -> None:
    DuckDBRecorder(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE calls")
    con.close()
    with pytest.raises(LedgerCorrupt, match="missing tables calls"):
        DuckDBRecorder(path, read_only=True)


def test_verify_from_a_reader_names_a_tampered_seq(path: Path) -> None:
    with DuckDBRecorder(path) as writer:
        writer.append("r1", [*tick(1), *tick(2), *tick(3)], expected_seq=0, ts=1.0)
    con = duckdb.connect(str(path))
    con.execute("UPDATE events SET payload = '{\"n\":20}' WHERE seq = 2")
    con.close()
    with DuckDBRecorder(path, read_only=True) as reader:
        report = reader.verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "hash_mismatch")]


def test_reader_and_writer_threads_in_one_process(path: Path) -> None:
    writer = DuckDBRecorder(path)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for seq in range(30):
                writer.append("r1", tick(seq + 1), expected_seq=seq, ts=float(seq))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    seen = 0
    while thread.is_alive() or seen < 30:
        with DuckDBRecorder(path, read_only=True) as reader:
            head = reader.head("r1")
        assert head is None or head.seq >= seen
        seen = head.seq if head else 0
    thread.join()
    writer.close()
    assert errors == []
    assert seen == 30


WRITER_LOOP = """
import sys, time
from ledger import DuckDBRecorder, NewEvent
path, seconds = sys.argv[1], float(sys.argv[2])
with DuckDBRecorder(path) as recorder:
    print("ready", flush=True)
    seq, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        event = NewEvent("tick", 1, {"n": seq + 1})
        recorder.append("live", [event], expected_seq=seq, ts=time.time())
        seq += 1
    print(seq, flush=True)
"""


def test_readers_work_while_another_process_writes(path: Path) -> None:
    writer = python(WRITER_LOOP, str(path), "1.5")
    try:
        assert writer.stdout.readline().strip() == "ready"
        reads, last_seq = 0, 0
        while writer.poll() is None:
            with DuckDBRecorder(path, read_only=True) as reader:
                heads = reader.heads()
                if heads:
                    events = reader.read("live")
                    assert [e.seq for e in events] == list(range(1, len(events) + 1))
                    assert len(events) >= heads[0].seq >= last_seq
                    last_seq = heads[0].seq
            reads += 1
        out, err = writer.communicate(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    appended = int(out.split()[-1])
    assert reads > 0
    assert appended > 0
    with DuckDBRecorder(path, read_only=True) as reader:
        assert reader.head("live").seq == appended
        report = reader.verify("live")
    assert report.ok, report.problems


HOLD_FILE = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_file_held_past_the_timeout_is_busy(path: Path) -> None:
    DuckDBRecorder(path).close()
    holder = python(HOLD_FILE, str(path), "5")
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(LedgerBusy, match=f"stayed locked by pid {holder.pid}"):
            DuckDBRecorder(path, read_only=True, busy_timeout=0.2)
    finally:
        holder.kill()
        holder.wait()
    with DuckDBRecorder(path, read_only=True, busy_timeout=0.2) as reader:
        assert reader.heads() == []


KILLED_WRITER = """
import os, signal, sys
from ledger import DuckDBRecorder, NewEvent
recorder = DuckDBRecorder(sys.argv[1])
recorder.append("r1", [NewEvent("a", 1, {}), NewEvent("b", 1, {"x": [1]})], expected_seq=0, ts=1.0)
recorder.append("r1", [NewEvent("c", 1, {})], expected_seq=2, ts=2.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_after_append_loses_nothing(path: Path) -> None:
    writer = python(KILLED_WRITER, str(path))
    _, err = writer.communicate(timeout=30)
    assert writer.returncode == -signal.SIGKILL, err
    with DuckDBRecorder(path, read_only=True) as reader:
        assert [e.type for e in reader.read("r1")] == ["a", "b", "c"]
        assert reader.verify("r1").ok
    # The dead writer's lock went with it.
    with DuckDBRecorder(path) as writer:
        assert writer.append("r1", tick(4), expected_seq=3, ts=3.0)[0].seq == 4


def test_bad_bulk_rows_are_a_ledger_error(path: Path) -> None:
    with DuckDBRecorder(path) as writer, pytest.raises(LedgerError, match="table episodes"):
        writer.append_episodes(
            [EpisodeRow("r1", "zero", "eval", "v", "e", "i", 1.0, "ok", "", 1, 1.0)]  # type: ignore[arg-type]
        )


def test_closing_the_writer_leaves_one_self_contained_file(path: Path) -> None:
    wal = Path(f"{path}.wal")
    with DuckDBRecorder(path) as writer:
        writer.append("r1", tick(1), expected_seq=0, ts=1.0)
        assert wal.exists()
    assert not wal.exists() or wal.stat().st_size == 0
    with DuckDBRecorder(path, read_only=True) as reader:
        assert reader.head("r1").seq == 1


def test_writer_creates_parent_folders_and_lock_file(path: Path) -> None:
    with DuckDBRecorder(path) as writer:
        assert writer.path == path
        assert path.exists()
        assert path.with_name("ledger.duckdb.lock").read_text().strip() == str(os.getpid())
    assert path.with_name("ledger.duckdb.lock").read_text() == ""
