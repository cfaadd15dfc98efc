"""The read commands against a real workspace produced by a scripted run."""

import json
import subprocess
import sys
import time

import duckdb
import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.workspace import Workspace
from tests.support.run_scripted import config, orchestrator


@pytest.fixture
def done_ws(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    with ws.writer() as rec:
        orchestrator(ws, rec, "w+h").start("r1", config("w+h", 3))
    return ws


def sia(ws, *args):
    return CliRunner().invoke(cli, ["--workspace", str(ws.root), *args])


def test_status_and_replay_json(done_ws):
    out = sia(done_ws, "status", "--json")
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)
    assert row["run_id"] == "r1" and row["status"] == "done" and row["iteration"] == 3
    out = sia(done_ws, "replay", "r1", "--json")
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["problems"] == []
    assert [i["lever"] for i in data["iterations"]] == [None, "edit", "train", "edit"]
    assert [i["accepted"] for i in data["iterations"]] == [True, True, False, True]


def test_human_output_renders(done_ws):
    for args in (
        ["status"],
        ["replay", "r1"],
        ["log", "r1"],
        ["diff", "r1", "0", "1"],
        ["verify", "r1"],
    ):
        out = sia(done_ws, *args)
        assert out.exit_code == 0, (args, out.output)
    assert "Sia-Event" in sia(done_ws, "log", "r1").output
    assert "+Answer with digits only. v1" in sia(done_ws, "diff", "r1", "0", "1").output


def test_log_and_diff_json(done_ws):
    data = json.loads(sia(done_ws, "log", "r1", "--json").output)
    assert [c["trailers"]["Sia-Iteration"] for c in data["commits"]] == ["3", "1", "0"]
    assert [a["tag"] for a in data["adapters"]] == ["lora/r1/2"]
    patch = json.loads(sia(done_ws, "diff", "r1", "1", "2", "--json").output)["patch"]
    assert patch == ""  # iteration 2 trained an adapter: same harness as iteration 1


def _tamper(ws, sql):
    con = duckdb.connect(str(ws.ledger_path))
    try:
        con.execute(sql)
    finally:
        con.close()


def _first_seq(ws, event_type):
    con = duckdb.connect(str(ws.ledger_path), read_only=True)
    try:
        return con.execute("SELECT min(seq) FROM events WHERE type = ?", [event_type]).fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("sql", "event_type"),
    [
        (
            "UPDATE events SET payload = replace(payload, 'scripted', 'forged') WHERE seq = {seq}",
            "DecisionMade",
        ),
        ("DELETE FROM events WHERE seq = {seq}", "RolloutCompleted"),
    ],
)
def test_verify_names_the_tampered_seq(done_ws, sql, event_type):
    seq = _first_seq(done_ws, event_type)
    _tamper(done_ws, sql.format(seq=seq))
    out = sia(done_ws, "verify", "r1", "--json")
    assert out.exit_code == 1
    problems = json.loads(out.output)["problems"]
    assert problems[0]["seq"] == seq, problems
    human = sia(done_ws, "verify", "r1")
    assert f"seq {seq}:" in human.output.splitlines()[0]


def test_verify_names_a_duplicated_seq(done_ws):
    # A forger must drop the primary key to store a second event 12; verify still sees it.
    _tamper(
        done_ws,
        "CREATE TABLE e2 AS SELECT * FROM events; DROP TABLE events; "
        "ALTER TABLE e2 RENAME TO events; "
        "INSERT INTO events SELECT * FROM events WHERE seq = 12",
    )
    out = sia(done_ws, "verify", "r1", "--json")
    assert out.exit_code == 1
    assert json.loads(out.output)["problems"][0]["seq"] == 12


def test_verify_sees_a_missing_artifact(done_ws):
    import shutil

    for d in (done_ws.artifacts_path / "sha256").iterdir():
        if d.is_dir():
            shutil.rmtree(d)
    out = sia(done_ws, "verify", "r1", "--json")
    assert out.exit_code == 1
    assert json.loads(out.output)["problems"][0]["kind"] == "artifact"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "nope"], "no run 'nope'"),
        (["diff", "r1", "0", "9"], "has no iteration 9"),
    ],
)
def test_user_mistakes_give_one_line(done_ws, args, message):
    out = sia(done_ws, *args)
    assert out.exit_code != 0
    assert message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_missing_workspace_and_corrupt_ledger(tmp_path):
    out = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "none"), "status"])
    assert out.exit_code == 1 and "no SIA workspace" in out.output
    ws = Workspace.create(tmp_path / "bad")
    ws.ledger_path.write_bytes(b"this is not a database" * 100)
    out = CliRunner().invoke(cli, ["--workspace", str(ws.root), "status"])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert "not a readable SIA ledger" in out.output


WRITER = """
import sys, time
from ledger import NewEvent
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.codec import encode
from statemachine.planner import next_step
from statemachine.state import RunState
ws = Workspace.create(sys.argv[1])
with ws.writer() as rec:
    seq = 0
    rec.append("live", [NewEvent(*encode(ev.RunStarted(task="t", mode="h", seed=0)))],
               expected_seq=0, ts=time.time())
    seq = 1
    print("ready", flush=True)
    deadline = time.time() + 3
    while time.time() < deadline:
        rec.append("live", [NewEvent(*encode(ev.RunResumed(pid=seq)))], expected_seq=seq,
                   ts=time.time())
        seq += 1
    print(seq, flush=True)
"""


def test_status_from_another_process_while_a_writer_appends(tmp_path):
    root = tmp_path / "ws"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    seen = []
    while writer.poll() is None:
        out = subprocess.run(
            [sys.executable, "-m", "sia.cli", "--workspace", str(root), "status", "--json"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        seen.append(json.loads(out.stdout)[0]["events"])
        time.sleep(0.05)
    final = int(writer.stdout.read().strip())
    assert writer.returncode == 0
    assert seen and seen == sorted(seen) and seen[-1] <= final
    assert final > 10  # the writer was not starved by the readers


def test_status_watch_redraws_while_a_writer_appends_and_stops_on_ctrl_c(tmp_path):
    import re
    import signal

    root = tmp_path / "ws"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline().strip() == "ready"
    watch = subprocess.Popen(
        [sys.executable, "-m", "sia.cli", "--workspace", str(root), "status", "--watch",
         "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "TTY_COMPATIBLE": "1", "COLUMNS": "200"},
    )  # fmt: skip
    time.sleep(2.0)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=30)
    final = int(writer.stdout.read().strip())
    writer.wait(timeout=30)
    assert watch.returncode == 0, err
    # Each redraw shows the live run's event count; they grow as the writer appends.
    counts = [
        int(n) for n in re.findall(r"│ live\s*│ running\s*│[^│]*│[^│]*│[^│]*│[^│]*│\s*(\d+)", out)
    ]
    assert len(counts) >= 2, out[-2000:]
    assert counts == sorted(counts) and counts[-1] > counts[0] and counts[-1] <= final


def test_status_watch_refuses_json(done_ws):
    out = sia(done_ws, "status", "--watch", "--json")
    assert out.exit_code == 2 and "does not combine with --json" in out.output
