"""SIGKILL a run between an effect (git commit, adapter artifact, tag) and the event that
records it, then resume: the effect is adopted or redone, never doubled."""

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


@pytest.fixture
def ws(tmp_path):
    return Workspace.create(tmp_path / "ws")


def _run(ws, *args, crash_at=None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    if crash_at:
        env["SIA_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "tests.support.run_scripted", str(ws.root), "r1", *args],
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize(
    ("crash_at", "adopted"),
    [
        ("after-commit:1", "adopted commit"),  # initial harness
        ("after-commit:2", "adopted commit"),  # first edit
        ("after-tag:1", "adopted adapter tag lora/r1/2"),
        ("after-artifact:1", None),  # no tag yet: training runs again
    ],
)
def test_kill_between_effect_and_event_then_resume_does_it_once(ws, faults, crash_at, adopted):
    died = _run(ws, "--mode", "w+h", "--iterations", "3", crash_at=crash_at)
    assert died.returncode == -9, died.stderr
    injection = faults.inject(f"SIGKILL {crash_at.partition(':')[0]} (reached {crash_at})")
    resumed = _run(ws, "--mode", "w+h", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = simulate("r1", iterations=3, mode="w+h")
    with ws.reader() as rec:
        state = run_state(rec, "r1")
        records = rec.read("r1")
        injection.account(*run_loss(rec, "r1", expected))
        assert audit_run(rec, ws.repo(), ws.artifacts(), "r1").ok
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert state.status == "done"
    assert structure(state) == structure(fold("r1", expected))
    events = [e.event for e in envelopes(records)]
    commits = [e.commit for e in events if isinstance(e, ev.HarnessCommitted)]
    assert len(commits) == len(set(commits)) == 1 + 2  # initial + edits in iterations 1 and 3
    all_commits = git(ws, "rev-list", "--all").split()
    assert sorted(all_commits) == sorted(commits)  # nothing duplicated in git either
    tags = [e.tag for e in events if isinstance(e, ev.AdapterTagged)]
    assert tags == ["lora/r1/2"] == ws.repo().adapter_tags("r1")
    resumed_event = next(e for e in events if isinstance(e, ev.RunResumed))
    if adopted:
        assert any(n.startswith(adopted) for n in resumed_event.reconciled)
        assert sum(getattr(e, "adopted", False) for e in events) == 1
    else:
        assert resumed_event.reconciled == ()
