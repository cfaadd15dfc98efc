import subprocess

import pytest

from sia.audit import audit_run
from sia.errors import EffectFailed, Interrupted, RunExists, RunNotResumable
from sia.history import run_state
from statemachine import events as ev
from statemachine.replay import envelopes
from tests.support.run_scripted import config, orchestrator
from tests.support.scripted import simulate


def structure(state):
    """What must not depend on how a run was executed: phases, levers, verdicts, scores."""
    return [
        (r.iteration, r.phases, r.decision.lever if r.decision else None, r.score, r.accepted)
        for r in state.iterations
    ]


def git(ws, *args):
    return subprocess.run(
        ["git", "-C", str(ws.repo_path), *args], check=True, capture_output=True, text=True
    ).stdout


def test_scripted_run_matches_the_pure_simulation(ws):
    with ws.writer() as rec:
        state = orchestrator(ws, rec, "w+h").start("r1", config("w+h", 5))
        assert state.status == "done"
        assert structure(state) == structure(
            __import__("statemachine").fold("r1", simulate("r1", iterations=5, mode="w+h"))
        )
        assert run_state(rec, "r1") == state  # the ledger alone rebuilds it
        assert audit_run(rec, ws.repo(), ws.artifacts(), "r1").ok


def test_git_log_reads_as_the_story_of_the_run(ws):
    with ws.writer() as rec:
        state = orchestrator(ws, rec, "h").start("r1", config("h", 3))
        records = rec.read("r1")
    commits = {
        e.event.commit: e.seq
        for e in envelopes(records)
        if isinstance(e.event, ev.HarnessCommitted)
    }
    assert len(commits) == 4  # the initial harness and one per edit
    out = git(
        ws,
        "log",
        "--format=%H%x00%s%x00%(trailers:key=Sia-Run,key=Sia-Iteration,"
        "key=Sia-Event,valueonly,separator=%x2C)",
        "runs/r1",
    )
    lines = [line.split("\0") for line in out.strip().splitlines()]
    # iteration 2 regressed: its commit is off the branch but kept reachable
    on_branch = [sha for sha, _, _ in lines]
    rejected = state.iterations[2].harness_commit
    assert rejected not in on_branch
    assert rejected in git(ws, "log", "--all", "--format=%H")
    for sha, _subject, trailers in lines:
        run, _iteration, seq = trailers.split(",")
        assert run == "r1" and int(seq) == commits[sha]
    assert lines[-1][1].startswith("Initial harness")


def test_rejected_candidate_does_not_become_the_base(ws):
    with ws.writer() as rec:
        state = orchestrator(ws, rec, "h").start("r1", config("h", 3))
    it2, it3 = state.iterations[2], state.iterations[3]
    assert it2.accepted is False
    commit3 = ws.repo().commit_info(it3.harness_commit)
    assert commit3.parents == (state.iterations[1].harness_commit,)


def test_adapters_are_tagged_with_verified_manifests(ws):
    with ws.writer() as rec:
        state = orchestrator(ws, rec, "w").start("r1", config("w", 2))
    repo, store = ws.repo(), ws.artifacts()
    tags = repo.adapter_tags("r1")
    assert tags == ["lora/r1/1", "lora/r1/2"]
    for tag in tags:
        manifest = repo.adapter_manifest(tag)
        store.verify(manifest["sha256"])
        assert manifest["algorithm"] == "grpo" and manifest["config"]["rank"] == 8
    assert state.best.adapter_tag == "lora/r1/1"  # iteration 2 regressed


def test_a_run_id_is_used_once(ws):
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "h")
        orch.start("r1", config("h", 0))
        with pytest.raises(RunExists):
            orch.start("r1", config("h", 0))
        with pytest.raises(RunNotResumable, match="is done"):
            orch.resume("r1")
        with pytest.raises(RunNotResumable, match="no run named"):
            orch.resume("nope")


def test_a_failed_effect_fails_the_run_with_its_reason(ws):
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "w")

        def broken(request):
            raise EffectFailed("trainer ran out of memory")

        orch.c.trainer.train = broken
        state = orch.start("r1", config("w", 2))
    assert state.status == "failed" and state.error == "trainer ran out of memory"


def test_forced_algorithm_is_recorded_with_the_agents_choice(ws):
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "w")
        cfg = config("w", 1)
        cfg = type(cfg)(**{**cfg.__dict__, "algorithm": "dpo"})
        state = orch.start("r1", cfg)
    decision = state.iterations[1].decision
    assert decision.algorithm == "dpo"
    assert "forced by the run config" in decision.algorithm_reason
    assert "grpo" in decision.algorithm_reason


@pytest.mark.parametrize(("mode", "group", "temperature"), [("h", 1, None), ("w+h", 4, 1.0)])
def test_rollouts_run_each_item_as_a_group_at_the_configured_temperature(
    ws, mode, group, temperature
):
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, mode)
        state = orch.start("r1", config(mode, 2))
    rollouts = [c for c in orch.c.runner.calls if hasattr(c, "item_ids")]
    assert rollouts and all(r.temperature == temperature for r in rollouts)
    for rec_ in state.iterations[1:]:
        ids = rec_.item_ids
        assert len(ids) == 4 * group  # batch_size 4
        assert all(ids[i : i + group] == (ids[i],) * group for i in range(0, len(ids), group))
        assert len(set(ids)) == 4


def test_a_train_without_signal_abandons_the_iteration_and_the_run_goes_on(ws):
    from tests.support.scripted import ABANDON_REASON, ABANDONED_TRAIN

    with ws.writer() as rec:
        state = orchestrator(ws, rec, "w+h").start("r1", config("w+h", ABANDONED_TRAIN + 1))
        stored = run_state(rec, "r1")
    assert state.status == "done" and stored == state
    assert structure(state) == structure(
        __import__("statemachine").fold(
            "r1", simulate("r1", iterations=ABANDONED_TRAIN + 1, mode="w+h")
        )
    )
    abandoned = state.iterations[ABANDONED_TRAIN]
    assert abandoned.abandoned == ABANDON_REASON and abandoned.accepted is False
    assert abandoned.score is None and abandoned.adapter_tag is None
    assert abandoned.phases == ("PLAN", "ROLLOUT", "FEEDBACK", "TRAIN", "EVAL")
    assert state.iterations[ABANDONED_TRAIN + 1].accepted is not None  # the next one ran
    assert f"lora/r1/{ABANDONED_TRAIN}" not in ws.repo().adapter_tags("r1")


def test_a_stop_whose_interrupt_was_lost_is_recorded_at_the_next_step(ws):
    with ws.writer() as rec:

        def stop_requested():
            # A stop came during the first rollout, and its KeyboardInterrupt never surfaced.
            events = [e.event for e in envelopes(rec.read("r1"))]
            return "SIGTERM" if any(isinstance(e, ev.RolloutCompleted) for e in events) else None

        orch = orchestrator(ws, rec, "h")
        orch.stop_requested = stop_requested
        with pytest.raises(Interrupted, match=r"^SIGTERM: stopped in ROLLOUT of iteration 1"):
            orch.start("r1", config("h", 2))
        events = [e.event for e in envelopes(rec.read("r1"))]
        assert isinstance(events[-1], ev.RunInterrupted) and events[-1].signal == "SIGTERM"
        assert isinstance(events[-2], ev.RolloutCompleted)  # the step in hand was finished
        assert run_state(rec, "r1").status == "running"  # resumable
