"""Ctrl-C (SIGINT) or SIGTERM stops `sia run` gracefully: the stop is recorded, the
process exits 130 with one line, and `sia resume` finishes the run as if nothing happened.

Real processes, a real ledger and the tiny model; the signal is sent once the ledger shows
the run in the phase under test.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import DuckDBRecorder
from sia.audit import audit_run
from sia.history import run_state
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.replay import envelopes
from tests.faults.accounting import difference, episode_keys, run_loss


def _sia(ws, *args, module="sia.cli", **kw):
    command = [sys.executable, "-m", module, "-w", str(ws), *args]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _run_args(model_dir, mode):
    return ["run", "--mode", mode, "--policy", str(model_dir), "--iterations", "2"]


def _phase(ws) -> tuple[str | None, int]:
    path = ws / "ledger.duckdb"
    if not path.exists():
        return None, 0
    try:
        with DuckDBRecorder(path, read_only=True) as recorder:
            if recorder.head("r") is None:
                return None, 0
            state = run_state(recorder, "r")
    except Exception:  # the writer holds the file this instant: ask again
        return None, 0
    return (state.phase.value if state.phase else None), state.iteration


def _structure(ws):
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        state = run_state(recorder, "r")
        events = [e.event for e in envelopes(recorder.read("r"))]
        workspace = Workspace.open(ws)
        assert audit_run(recorder, workspace.repo(), workspace.artifacts(), "r").ok
    shape = [
        (r.iteration, r.phases, r.decision.lever if r.decision else None, r.score, r.accepted)
        for r in state.iterations
    ]
    return state, shape, events


def _loss(ws, whole_ws) -> tuple[int, int]:
    """Events and episode results the resumed run lacks or holds twice, against ``whole``."""
    with DuckDBRecorder(whole_ws / "ledger.duckdb", read_only=True) as recorder:
        history = list(envelopes(recorder.read("r")))
        wanted = episode_keys(recorder.read_episodes("r"))
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        lost, duplicates = run_loss(recorder, "r", history)
        missing, doubled = difference(wanted, episode_keys(recorder.read_episodes("r")))
    return lost + missing, duplicates + doubled


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory):
    """The uninterrupted run of each set of arguments, made once: what a stopped one must
    end up as."""
    made: dict[tuple[str, ...], Path] = {}

    def whole(args: list[str]) -> Path:
        if tuple(args) not in made:
            ws = tmp_path_factory.mktemp("whole")
            process = _sia(ws, *args, "--run-id", "r", "--quiet")
            assert process.wait(timeout=600) == 0, process.stderr.read().decode()
            made[tuple(args)] = ws
        return made[tuple(args)]

    return whole


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "phase", "signum"),
    [("h", "ROLLOUT", signal.SIGINT), ("w", "TRAIN", signal.SIGINT), ("h", "EVAL", signal.SIGTERM)],
)
def test_a_stopped_run_exits_130_and_resumes_to_the_same_result(
    tmp_path, faults, tiny_model_dir, whole_runs, mode, phase, signum
):
    common = [*_run_args(tiny_model_dir, mode), "--batch-size", "3", "--seed", "2"]
    whole = whole_runs(common)

    ws = tmp_path / "ws"
    process = _sia(ws, *common, "--run-id", "r", "--quiet")
    deadline = time.monotonic() + 300
    while _phase(ws) != (phase, 1):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"never saw {phase} of iteration 1"
        time.sleep(0.02)
    process.send_signal(signum)
    injection = faults.inject(f"{signal.Signals(signum).name} during {phase} of a {mode} run")
    code = process.wait(timeout=120)
    err = process.stderr.read().decode().strip().splitlines()
    assert code == 130, "\n".join(err)
    name = signal.Signals(signum).name
    assert err[-1].startswith(f"Interrupted: {name}: stopped in ")
    assert err[-1].endswith("continue with: sia resume r")

    _, _, events = _structure(ws)
    stops = [e for e in events if isinstance(e, ev.RunInterrupted)]
    assert len(stops) == 1 and stops[0].signal == name and stops[0].iteration == 1
    resumed = _sia(ws, "resume", "r", "--quiet")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    injection.account(*_loss(ws, whole))
    assert (injection.lost, injection.duplicates) == (0, 0)
    state, shape, events = _structure(ws)
    _, expected, _ = _structure(whole)
    assert state.status == "done" and state.interruptions == 1
    assert shape == expected
