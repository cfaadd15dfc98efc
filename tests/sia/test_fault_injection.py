"""SIGKILL the run process after every append of the run, resume, and compare.

Each append is a phase boundary (or an effect's result) reaching the ledger; a kill right
after it is the worst moment for the next effect, which has not started. Together with the
kills between an effect and its event (``test_orchestrator``), every step of a run is a
place it may die. After each kill, ``resume`` must finish the run so that it cannot be told
from an uninterrupted one: the same folded structure, an intact hash chain, every git
commit, tag and artifact recorded exactly once, and no event twice.
"""

import subprocess
import sys
from collections import Counter

import pytest

from sia.audit import audit_run
from sia.history import run_state
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine import fold
from statemachine.replay import envelopes
from tests.sia.test_orchestrator import git, structure
from tests.support.scripted import simulate

MODE, ITERATIONS = "w+h", 3
#: Events a run records at most once per iteration (Evaluated once per split).
ONCE = (
    ev.BatchPlanned,
    ev.RolloutCompleted,
    ev.DecisionMade,
    ev.HarnessCommitted,
    ev.AdapterTagged,
    ev.CandidateAccepted,
    ev.CandidateRejected,
    ev.OutcomeRecorded,
)


def _scripted(root, *args, crash_at=None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    if crash_at:
        env["SIA_CRASH_AT"] = crash_at
    command = [sys.executable, "-m", "tests.support.run_scripted", str(root), "r1", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def _check_once(ws: Workspace) -> None:
    with ws.reader() as rec:
        state = run_state(rec, "r1")
        events = [e.event for e in envelopes(rec.read("r1"))]
        assert audit_run(rec, ws.repo(), ws.artifacts(), "r1").ok
    assert state.status == "done"
    expected = fold("r1", simulate("r1", iterations=ITERATIONS, mode=MODE))
    assert structure(state) == structure(expected)
    seen = Counter(
        (type(e).__name__, e.iteration, getattr(e, "split", None))
        for e in events
        if isinstance(e, (*ONCE, ev.Evaluated))
    )
    assert max(seen.values()) == 1, [key for key, n in seen.items() if n > 1]
    commits = [e.commit for e in events if isinstance(e, ev.HarnessCommitted)]
    assert sorted(git(ws, "rev-list", "--all").split()) == sorted(commits)
    tags = [e for e in events if isinstance(e, ev.AdapterTagged)]
    assert [t.tag for t in tags] == ws.repo().adapter_tags("r1")
    assert sorted(ws.artifacts().digests()) == sorted({t.sha256 for t in tags})


@pytest.mark.slow
def test_a_kill_after_any_append_is_resumed_exactly_once(tmp_path):
    survived = 0
    for n in range(1, 500):
        ws = Workspace.create(tmp_path / f"ws{n}")
        died = _scripted(
            ws.root, "--mode", MODE, "--iterations", str(ITERATIONS), crash_at=f"after-append:{n}"
        )
        if died.returncode == 0:
            break  # the run appends fewer than n times: every boundary has been tried
        assert died.returncode == -9, died.stderr
        with ws.reader() as rec:
            finished = run_state(rec, "r1").status == "done"  # killed after its last append
        if not finished:
            resumed = _scripted(ws.root, "--mode", MODE, "--resume")
            assert resumed.returncode == 0, f"kill after append {n}: {resumed.stderr}"
        _check_once(ws)
        survived += 1
    # A w+h run of three iterations appends once per phase and once per effect result.
    assert survived >= 30
    print(f"survived {survived} kills, one after each append")
