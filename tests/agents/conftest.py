import pytest

from sia.agents import RuleFeedbackAgent
from sia.ports import FeedbackContext
from statemachine.events import DecisionMade, OutcomeRecorded, RolloutCompleted
from statemachine.state import LEVERS_BY_MODE, IterationRecord
from tasks.arith import ArithConfig, ArithTask
from tests.support.clients import FakeClient, load_agent


def rollout(
    mean_reward: float = 0.25, episodes: int = 16, failures: int = 0, **metrics
) -> RolloutCompleted:
    metrics.setdefault("success_rate", mean_reward)
    return RolloutCompleted(
        iteration=1,
        harness_commit="c0ffee",
        adapter_tag=None,
        episodes=episodes,
        failures=failures,
        mean_reward=mean_reward,
        metrics=metrics,
    )


def record(
    iteration: int,
    lever: str,
    *,
    delta: float | None,
    accepted: bool,
    operator: str = "answer-format",
    score: float | None = None,
) -> IterationRecord:
    """A finished iteration whose decision pulled ``lever`` and moved validation by ``delta``."""
    decision = DecisionMade(
        iteration=iteration,
        lever=lever,
        agent="offline-feedback",
        rationale="earlier decision",
        algorithm="grpo" if lever == "train" else None,
        edit={"summary": "s", "operator": operator, "files": {"harness.json": "{}"}}
        if lever == "edit"
        else None,
    )
    outcome = (
        None
        if delta is None
        else OutcomeRecorded(iteration=iteration, lever=lever, delta=delta, paid_off=delta > 0)
    )
    return IterationRecord(
        iteration=iteration,
        decision=decision,
        accepted=accepted,
        outcome=outcome,
        score=score,
    )


def context(mode: str, harness, roll=None, history=()) -> FeedbackContext:
    return FeedbackContext(
        run_id="run-1",
        iteration=len(history) + 1,
        levers=LEVERS_BY_MODE[mode],
        harness=harness,
        rollout=roll or rollout(),
        history=tuple(history),
    )


@pytest.fixture
def task() -> ArithTask:
    return ArithTask(seed=0, config=ArithConfig(train=20, val=5, test=5))


@pytest.fixture
def template(task) -> dict[str, bytes]:
    return task.harness_template()


@pytest.fixture
def feedback(task) -> RuleFeedbackAgent:
    return RuleFeedbackAgent.for_task(task)


@pytest.fixture
def fake_client() -> type[FakeClient]:
    return FakeClient


@pytest.fixture
def agent_module():
    return load_agent


@pytest.fixture
def make_rollout():
    return rollout


@pytest.fixture
def make_record():
    return record


@pytest.fixture
def make_context():
    return context
