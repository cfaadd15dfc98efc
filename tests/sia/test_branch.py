"""Branching: a new run that starts where another stood after iteration k, shares its
history up to k in the ledger and in git, and diverges after."""

import dataclasses
import json

import pytest
from click.testing import CliRunner

from sia.audit import audit_run
from sia.cli import cli
from sia.errors import RunExists, SiaError
from sia.history import run_state
from statemachine import events as ev
from statemachine.replay import envelopes
from tests.sia.test_orchestrator import git
from tests.support.run_scripted import config, orchestrator


@pytest.fixture
def parent(ws):
    with ws.writer() as rec:
        orchestrator(ws, rec, "w+h").start("p", config("w+h", 4))
    return ws


def _closed_at(ws, run_id, iteration):
    """The parent's best after ``iteration`` and the seq of that iteration's last event."""
    with ws.reader() as rec:
        envs = envelopes(rec.read(run_id))
    last = max(e.seq for e in envs if getattr(e.event, "iteration", None) == iteration)
    from statemachine import fold

    return fold(run_id, [e for e in envs if e.seq <= last]).best, last


def test_a_branch_shares_history_up_to_k_and_diverges_after(parent):
    ws = parent
    best, seq = _closed_at(ws, "p", 2)
    with ws.writer() as rec:
        cfg = dataclasses.replace(config("h", 2), task="arith-v1")
        orch = orchestrator(ws, rec, "h")
        start = orch.branch("p", 2, "b", cfg)
        assert start.best == dataclasses.replace(best, iteration=2)
        state = orchestrator(ws, rec, "h").resume("b")
        first = envelopes(rec.read("b"))[0].event
        assert audit_run(rec, ws.repo(), ws.artifacts(), "b").ok
        assert audit_run(rec, ws.repo(), ws.artifacts(), "p").ok
    assert isinstance(first, ev.RunBranched)
    assert (first.parent_run, first.parent_seq, first.at_iteration) == ("p", seq, 2)
    assert first.harness_commit == best.harness_commit and first.adapter_tag == best.adapter_tag
    assert state.status == "done" and state.mode == "h"
    assert [r.iteration for r in state.iterations] == [3, 4]  # the branch's own budget: 2
    # git: the branch forks from the parent's best commit after iteration 2.
    fork = git(ws, "merge-base", "runs/p", "runs/b").strip()
    assert fork == best.harness_commit
    mine = git(ws, "rev-list", "runs/b", f"^{fork}").split()
    theirs = git(ws, "rev-list", "runs/p", f"^{fork}").split()
    assert mine and theirs and not set(mine) & set(theirs)
    graph = git(ws, "log", "--graph", "--oneline", "--decorate", "--all")
    assert "runs/b" in graph and "runs/p" in graph and "|/" in graph  # the fork, drawn

    out = CliRunner().invoke(cli, ["-w", str(ws.root), "log", "--json"])
    (root,) = json.loads(out.output)["runs"]
    assert root["run_id"] == "p" and [b["run_id"] for b in root["branches"]] == ["b"]
    assert root["branches"][0]["at_iteration"] == 2
    text = CliRunner().invoke(cli, ["-w", str(ws.root), "log"]).output
    assert "└── b from p after iteration 2" in text


def test_branch_refusals(parent):
    ws = parent
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "h")
        cfg = dataclasses.replace(config("h", 1), task="arith-v1")
        with pytest.raises(SiaError, match="no run named nope"):
            orch.branch("nope", 1, "x", cfg)
        with pytest.raises(SiaError, match="iteration 9 of p has not finished"):
            orch.branch("p", 9, "x", cfg)
        with pytest.raises(SiaError, match="keeps its parent's task"):
            orch.branch("p", 1, "x", dataclasses.replace(cfg, task="other"))
        orch.branch("p", 3, "b", cfg)
        with pytest.raises(RunExists):
            orch.branch("p", 1, "b", cfg)
        with pytest.raises(SiaError, match="before b branched from p; branch p instead"):
            orch.branch("b", 2, "c", cfg)
        assert run_state(rec, "b").status == "running"
