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

import pytest

from sia.audit import audit_run
from sia.history import run_state
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine import fold
from statemachine.replay import envelopes
from tests.faults.accounting import run_loss
from tests.sia.test_orchestrator import git, structure
from tests.support.scripted import simulate

MODE, ITERATIONS = "w+h", 3


def _scripted(root, *args, crash_at=None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    if crash_at:
        env["SIA_CRASH_AT"] = crash_at
    command = [sys.executable, "-m", "tests.support.run_scripted", str(root), "r1", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True)


def _check_once(ws: Workspace, injection) -> None:
    expected = simulate("r1", iterations=ITERATIONS, mode=MODE)
    with ws.reader() as rec:
        state = run_state(rec, "r1")
        events = [e.event for e in envelopes(rec.read("r1"))]
        injection.account(*run_loss(rec, "r1", expected))
        assert audit_run(rec, ws.repo(), ws.artifacts(), "r1").ok
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert state.status == "done"
    assert structure(state) == structure(fold("r1", expected))
    commits = [e.commit for e in events if isinstance(e, ev.HarnessCommitted)]
    assert sorted(git(ws, "rev-list", "--all").split()) == sorted(commits)
    tags = [e for e in events if isinstance(e, ev.AdapterTagged)]
    assert [t.tag for t in tags] == ws.repo().adapter_tags("r1")
    assert sorted(ws.artifacts().digests()) == sorted({t.sha256 for t in tags})


@pytest.mark.slow
def test_a_kill_after_any_append_is_resumed_exactly_once(tmp_path, faults):
    survived = 0
    for n in range(1, 500):
        ws = Workspace.create(tmp_path / f"ws{n}")
        died = _scripted(
            ws.root, "--mode", MODE, "--iterations", str(ITERATIONS), crash_at=f"after-append:{n}"
        )
        if died.returncode == 0:
            break  # the run appends fewer than n times: every boundary has been tried
        assert died.returncode == -9, died.stderr
        injection = faults.inject(f"SIGKILL after append {n}")
        with ws.reader() as rec:
            finished = run_state(rec, "r1").status == "done"  # killed after its last append
        if not finished:
            resumed = _scripted(ws.root, "--mode", MODE, "--resume")
            assert resumed.returncode == 0, f"kill after append {n}: {resumed.stderr}"
        _check_once(ws, injection)
        survived += 1
    # A w+h run of three iterations appends once per phase and once per effect result.
    assert survived >= 30
    print(f"survived {survived} kills, one after each append")
