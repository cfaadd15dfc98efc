import pytest

from statemachine.errors import IllegalTransition
from statemachine.phases import TRANSITIONS, Phase, PhaseMachine, Trigger, check_transition


def test_loop_goes_round_and_finishes():
    m = PhaseMachine()
    path = [
        Trigger.BEGIN_ROLLOUT,
        Trigger.REVIEW,
        Trigger.TRAIN,
        Trigger.EVALUATE,
        Trigger.PLAN_NEXT,
        Trigger.BEGIN_ROLLOUT,
        Trigger.REVIEW,
        Trigger.EDIT,
        Trigger.EVALUATE,
        Trigger.FINISH,
    ]
    seen = [m.fire(t) for t in path]
    assert seen[:5] == [Phase.ROLLOUT, Phase.FEEDBACK, Phase.TRAIN, Phase.EVAL, Phase.PLAN]
    assert seen[-1] is Phase.DONE


@pytest.mark.parametrize("phase", [p for p in Phase if p not in (Phase.DONE, Phase.FAILED)])
def test_fail_is_reachable_from_every_live_phase(phase):
    check_transition(phase, Trigger.FAIL, Phase.FAILED)


@pytest.mark.parametrize(
    ("source", "trigger", "dest"),
    [
        (Phase.PLAN, Trigger.FINISH, Phase.DONE),
        (Phase.ROLLOUT, Trigger.EDIT, Phase.EDIT),
        (Phase.FEEDBACK, Trigger.EVALUATE, Phase.EVAL),
        (Phase.DONE, Trigger.FAIL, Phase.FAILED),
        (Phase.FAILED, Trigger.PLAN_NEXT, Phase.PLAN),
        (Phase.EDIT, Trigger.EVALUATE, Phase.PLAN),  # right trigger, wrong destination
        (None, Trigger.START, Phase.ROLLOUT),
    ],
)
def test_illegal_transitions_raise_one_error(source, trigger, dest):
    with pytest.raises(IllegalTransition):
        check_transition(source, trigger, dest)


def test_machine_raises_illegal_transition_with_names():
    m = PhaseMachine()
    with pytest.raises(IllegalTransition, match="cannot finish from PLAN"):
        m.fire(Trigger.FINISH)
    assert m.state is Phase.PLAN


def test_no_auto_transitions():
    m = PhaseMachine()
    assert not hasattr(m, "to_DONE")


def test_every_declared_transition_is_checked_legal():
    for trigger, sources, dest in TRANSITIONS:
        for source in sources:
            check_transition(source, trigger, dest)
