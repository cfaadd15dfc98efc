"""`sia why` answers for every iteration, and each of its claims checks out against the
ledger, git and the artifact store."""

import json

import pytest
from click.testing import CliRunner

from sia.cli import cli
from statemachine import events as ev
from statemachine.replay import envelopes
from tests.support.run_scripted import config, orchestrator
from tests.support.scripted import ABANDON_REASON, ABANDONED_TRAIN

ITERATIONS = ABANDONED_TRAIN + 1


def _why(ws, iteration):
    out = CliRunner().invoke(cli, ["-w", str(ws.root), "why", "r1", str(iteration), "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_every_claim_of_sia_why_checks_out(ws):
    with ws.writer() as rec:
        orchestrator(ws, rec, "w+h").start("r1", config("w+h", ITERATIONS))
        by_seq = {e.seq: e.event for e in envelopes(rec.read("r1"))}
    repo, artifacts = ws.repo(), ws.artifacts()
    best = next(
        e.score for e in by_seq.values() if isinstance(e, ev.Evaluated) and e.iteration == 0
    )
    kinds = set()
    for iteration in range(1, ITERATIONS + 1):
        audit = _why(ws, iteration)
        claimed = audit["decision"]
        decision = by_seq[claimed["seq"]]
        assert isinstance(decision, ev.DecisionMade) and decision.iteration == iteration
        assert claimed["lever"] == decision.lever and claimed["rules"] == list(decision.rules)
        assert claimed["alternatives"] == [dict(a) for a in decision.alternatives]
        assert audit["evidence"] == decision.diagnostics
        assert claimed["algorithm"] == decision.algorithm

        produced = audit["produced"]
        kinds.add(produced["kind"])
        event = by_seq[produced["seq"]]
        if produced["kind"] == "commit":
            assert isinstance(event, ev.HarnessCommitted) and event.commit == produced["commit"]
            info = repo.commit_info(produced["commit"])
            assert info.trailers["Sia-Iteration"] == str(iteration)
            assert info.trailers["Sia-Event"] == str(produced["seq"])
            assert produced["changed_files"] == repo.changed_files(event.parent, event.commit)
            assert decision.lever == "edit"
        elif produced["kind"] == "adapter":
            assert isinstance(event, ev.AdapterTagged) and event.tag == produced["tag"]
            manifest = repo.adapter_manifest(produced["tag"])
            assert manifest["sha256"] == produced["sha256"]
            artifacts.verify(produced["sha256"])
            assert produced["algorithm"] == decision.algorithm == "grpo"
        else:
            assert produced["kind"] == "nothing"
            assert isinstance(event, ev.CandidateAbandoned)
            assert produced["reason"] == event.reason == ABANDON_REASON

        evaluation = audit["evaluation"]
        if produced["kind"] == "nothing":
            assert evaluation["val"] is None and evaluation["accepted"] is False
            continue
        evaluated = by_seq[evaluation["seq"]]
        assert isinstance(evaluated, ev.Evaluated) and evaluated.split == "val"
        assert evaluated.iteration == iteration and evaluation["val"] == evaluated.score
        # The realised effect is the change against the best val before this iteration.
        assert evaluation["delta"] == pytest.approx(evaluated.score - best)
        assert evaluation["paid_off"] == (evaluated.score > best) == evaluation["accepted"]
        outcome = by_seq[evaluation["outcome_seq"]]
        assert isinstance(outcome, ev.OutcomeRecorded) and outcome.delta == evaluation["delta"]
        if evaluation["accepted"]:
            best = evaluated.score
    assert kinds == {"commit", "adapter", "nothing"}


def test_why_refuses_the_baseline_and_unknown_iterations_in_one_line(ws):
    with ws.writer() as rec:
        orchestrator(ws, rec, "h").start("r1", config("h", 2))
    for iteration, message in [
        (0, "iteration 0 of r1 is the baseline"),
        (5, "run r1 has no iteration 5 (iterations: 1, 2)"),
    ]:
        out = CliRunner().invoke(cli, ["-w", str(ws.root), "why", "r1", str(iteration)])
        assert out.exit_code == 1 and message in out.output
        assert out.output.count("\n") == 1


def test_why_renders_the_audit_as_text(ws):
    with ws.writer() as rec:
        orchestrator(ws, rec, "w+h").start("r1", config("w+h", 2))
    out = CliRunner().invoke(cli, ["-w", str(ws.root), "why", "r1", "2"])
    assert out.exit_code == 0, out.output
    for expected in ("alternatives weighed", "evidence", "expected: +5 points on val"):
        assert expected in out.output
    assert "produced: adapter lora/r1/2" in out.output or "produced: commit" in out.output
    assert "realised: val" in out.output
