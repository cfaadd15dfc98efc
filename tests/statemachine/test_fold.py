import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statemachine import events as ev
from statemachine.errors import IllegalTransition, InvalidEvent
from statemachine.phases import Phase
from statemachine.planner import Budget, Evaluate, next_step
from statemachine.state import Envelope, RunState, evolve, fold
from tests.support.scripted import simulate, val_score


def test_fold_reproduces_the_run():
    envs = simulate("r1", iterations=6, mode="w+h")
    state = fold("r1", envs)
    assert state.status == "done" and state.phase is Phase.DONE
    assert state.last_seq == len(envs)
    assert [r.iteration for r in state.iterations] == list(range(7))
    # keep-best: iteration 2 and 5 regress and are rejected; 6 is best
    assert [r.accepted for r in state.iterations] == [True, True, False, True, True, False, True]
    assert state.best.iteration == 6 and state.best.score == val_score(6)
    assert state.best.adapter_tag == "lora/r1/6"
    assert state.iterations[2].outcome.delta == pytest.approx(val_score(2) - val_score(1))
    assert fold("r1", envs) == state  # deterministic


def test_rejected_adapter_is_not_used_next():
    envs = simulate("r1", iterations=3, mode="w")
    state = fold("r1", envs)
    it2 = state.iterations[2]
    assert it2.accepted is False and it2.adapter_tag == "lora/r1/2"
    rollout3 = state.iterations[3].rollout
    assert rollout3.adapter_tag == "lora/r1/1"  # iteration 3 starts from the best


def test_fold_is_incremental():
    envs = simulate("r1", iterations=3)
    half = fold("r1", envs[:20])
    assert fold("r1", envs[20:], half) == fold("r1", envs)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["h", "w", "w+h"]), st.integers(0, 5), st.integers(0, 10_000))
def test_any_simulated_run_folds_and_finishes(mode, iterations, seed):
    envs = simulate("r", iterations=iterations, mode=mode, seed=seed)
    state = fold("r", envs)
    assert state.status == "done"
    assert len(state.iterations) == iterations + 1
    levers = {r.decision.lever for r in state.iterations if r.decision}
    assert levers <= {"h": {"edit"}, "w": {"train"}, "w+h": {"edit", "train"}}[mode]
    for k in range(len(envs)):
        assert fold("r", envs[:k]).last_seq == k


def _replace_event(envs, index, event):
    return [*envs[:index], Envelope(envs[index].seq, envs[index].ts, event), *envs[index + 1 :]]


def test_seq_gap_is_rejected():
    envs = simulate("r", iterations=1)
    with pytest.raises(InvalidEvent, match="seq 4 follows seq 2"):
        fold("r", envs[:2] + envs[3:])


def test_first_event_must_start_the_run():
    envs = simulate("r", iterations=1)
    with pytest.raises(InvalidEvent, match="must begin"):
        fold("r", [Envelope(1, 0.0, envs[1].event)])


def test_event_in_wrong_phase_is_rejected():
    envs = simulate("r", iterations=1)
    i = next(k for k, e in enumerate(envs) if isinstance(e.event, ev.RolloutCompleted))
    decision = next(e.event for e in envs if isinstance(e.event, ev.DecisionMade))
    with pytest.raises(InvalidEvent, match="only valid in FEEDBACK"):
        fold("r", _replace_event(envs, i, decision)[: i + 1])


def test_mode_forbids_lever():
    envs = simulate("r", iterations=1, mode="h")
    i = next(k for k, e in enumerate(envs) if isinstance(e.event, ev.DecisionMade))
    bad = dataclasses.replace(envs[i].event, lever="train", algorithm="grpo")
    with pytest.raises(InvalidEvent, match="not allowed in mode h"):
        fold("r", _replace_event(envs, i, bad)[: i + 1])


def test_evaluating_the_wrong_candidate_is_rejected():
    envs = simulate("r", iterations=1)
    i = [k for k, e in enumerate(envs) if isinstance(e.event, ev.Evaluated)][1]
    bad = dataclasses.replace(envs[i].event, harness_commit="f" * 40)
    with pytest.raises(InvalidEvent, match="other than its candidate"):
        fold("r", _replace_event(envs, i, bad)[: i + 1])


def test_illegal_phase_jump_is_rejected():
    envs = simulate("r", iterations=1)
    state = fold("r", envs[:3])  # RunStarted, PLAN, HarnessCommitted
    jump = ev.PhaseEntered(phase="TRAIN", iteration=0, trigger="train")
    with pytest.raises(IllegalTransition):
        evolve(state, Envelope(4, 0.0, jump))


def test_nothing_follows_the_end():
    envs = simulate("r", iterations=1)
    state = fold("r", envs)
    with pytest.raises(InvalidEvent, match="is done"):
        evolve(state, Envelope(state.last_seq + 1, 0.0, ev.RunResumed(pid=1)))


def test_budget_stops_on_wall_time_and_target():
    envs = simulate("r", iterations=5)
    state = fold("r", envs[:6])  # judged baseline of iteration 0, in EVAL
    assert state.phase is Phase.EVAL and state.current.accepted is True
    cfg = {**state.config, "budget": {"iterations": 5, "wall_seconds": 10}}
    late = dataclasses.replace(state, config=cfg)
    step = next_step(late, now=state.started_ts + 11)
    assert isinstance(step, Evaluate) and step.split == "test"
    assert Budget(iterations=5, target_score=0.1).exhausted(state, 0.0).startswith("target")


def test_empty_state_is_empty():
    assert RunState("x").status == "empty" and next_step(RunState("x"), now=0) is None


def test_agent_calls_and_rejected_patches_fold_where_agents_work():
    envs = simulate("r1", iterations=2, mode="h")
    feedback = next(i for i, e in enumerate(envs) if isinstance(e.event, ev.DecisionMade))
    state = fold("r1", envs[:feedback])  # in FEEDBACK of iteration 1, before the decision
    assert state.phase is Phase.FEEDBACK
    call = ev.AgentCalled(
        iteration=1, agent="a", model="m", input_tokens=5, output_tokens=1, cost_usd=0.25
    )
    unpriced = dataclasses.replace(call, cost_usd=None)
    rejected = ev.PatchRejected(
        iteration=1, agent="a", attempt=1, stage="smoke", reason="crashed", patch="--- a/x"
    )
    seq = state.last_seq
    for offset, event in enumerate((call, unpriced, rejected), start=1):
        state = evolve(state, Envelope(seq + offset, 0.0, event))
    assert (state.agent_calls, state.agent_cost_usd) == (2, 0.25)
    assert state.current.rejected_patches == (rejected,)
    # Elsewhere they are invalid: a patch rejected during a rollout names no agent's work.
    rollout = next(i for i, e in enumerate(envs) if isinstance(e.event, ev.BatchPlanned))
    early = fold("r1", envs[: rollout + 3])
    with pytest.raises(InvalidEvent, match="only valid in FEEDBACK"):
        evolve(early, Envelope(early.last_seq + 1, 0.0, rejected))
