"""The deterministic orchestrator core: given a state, what happens next.

``next_step`` is pure. It returns either :class:`Record` (events the core can write by
itself, such as a phase change or a keep-best verdict) or an *effect* request that the
orchestrator in ``sia`` executes outside the fold and reports back as events. Replaying the
same ledger therefore asks for the same steps, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statemachine import events as ev
from statemachine.errors import ConfigError, InvalidEvent
from statemachine.phases import Phase, Trigger
from statemachine.state import LEVERS_BY_MODE, Candidate, RunState

__all__ = [
    "ApplyEdit",
    "AskFeedback",
    "Budget",
    "Evaluate",
    "PlanBatch",
    "Record",
    "RunRollout",
    "Step",
    "TrainAdapter",
    "WriteInitialHarness",
    "iteration_seed",
    "judge",
    "next_step",
]


@dataclass(frozen=True, slots=True)
class Budget:
    """When a run stops. ``None`` means unlimited; a run always stops at ``iterations``."""

    iterations: int = 3
    wall_seconds: float | None = None
    tokens: int | None = None
    target_score: float | None = None

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"budget.iterations must be ≥ 0, got {self.iterations}")
        for name in ("wall_seconds", "tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"budget.{name} must be > 0, got {value}")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Budget:
        try:
            return cls(**config.get("budget", {}))
        except TypeError as exc:
            raise ConfigError(f"bad budget {config.get('budget')!r}: {exc}") from exc

    def exhausted(self, state: RunState, now: float) -> str | None:
        """The reason the run must stop now, or ``None``."""
        done = state.iteration - (state.branched_at or 0)
        if done >= self.iterations:
            return f"iteration budget reached ({self.iterations})"
        best = state.best.score if state.best else None
        if self.target_score is not None and best is not None and best >= self.target_score:
            return f"target score reached ({best:.4g} ≥ {self.target_score})"
        elapsed = now - state.started_ts if state.started_ts is not None else 0.0
        if self.wall_seconds is not None and elapsed >= self.wall_seconds:
            return f"wall-time budget reached ({self.wall_seconds:g} s)"
        if self.tokens is not None and state.tokens_used >= self.tokens:
            return f"token budget reached ({state.tokens_used} ≥ {self.tokens})"
        return None


class Step:
    """Something the orchestrator must do next."""


@dataclass(frozen=True, slots=True)
class Record(Step):
    """Events the core derives without any side effect; append them as they are."""

    events: tuple[ev.Event, ...]


@dataclass(frozen=True, slots=True)
class WriteInitialHarness(Step):
    iteration: int


@dataclass(frozen=True, slots=True)
class PlanBatch(Step):
    iteration: int
    seed: int


@dataclass(frozen=True, slots=True)
class RunRollout(Step):
    iteration: int
    harness_commit: str
    adapter_tag: str | None
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AskFeedback(Step):
    iteration: int
    levers: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApplyEdit(Step):
    """Commit ``decision.edit`` on top of the best harness (``parent``)."""

    iteration: int
    parent: str
    decision: ev.DecisionMade


@dataclass(frozen=True, slots=True)
class TrainAdapter(Step):
    iteration: int
    harness_commit: str
    base_adapter: str | None
    item_ids: tuple[str, ...]
    decision: ev.DecisionMade


@dataclass(frozen=True, slots=True)
class Evaluate(Step):
    iteration: int
    split: str
    candidate: Candidate


def _enter(phase: Phase, iteration: int, trigger: Trigger) -> Record:
    return Record((ev.PhaseEntered(phase=phase.value, iteration=iteration, trigger=trigger.value),))


def judge(state: RunState) -> tuple[ev.Event, ...]:
    """Keep-best: a candidate must beat the best strictly; ties keep the incumbent."""
    cur, best = state.current, state.best
    assert cur is not None and cur.score is not None
    if best is None or best.score is None:
        return (ev.CandidateAccepted(iteration=cur.iteration, score=cur.score, previous_best=None),)
    accepted = cur.score > best.score
    verdict: ev.Event = (
        ev.CandidateAccepted(iteration=cur.iteration, score=cur.score, previous_best=best.score)
        if accepted
        else ev.CandidateRejected(
            iteration=cur.iteration,
            score=cur.score,
            best_score=best.score,
            best_iteration=best.iteration,
        )
    )
    if cur.decision is None:
        return (verdict,)
    outcome = ev.OutcomeRecorded(
        iteration=cur.iteration,
        lever=cur.decision.lever,
        delta=round(cur.score - best.score, 12),
        paid_off=accepted,
    )
    return (verdict, outcome)


def iteration_seed(run_seed: int, iteration: int) -> int:
    """The seed of an iteration's rollout episodes and training; a re-run uses it too."""
    return run_seed + iteration


def _batch_seed(run_seed: int, iteration: int) -> int:
    # A fixed mix keeps batches reproducible per (run seed, iteration) across resumes.
    return (run_seed * 1_000_003 + iteration * 7919) % (2**31 - 1)


def next_step(state: RunState, *, now: float) -> Step | None:
    """What must happen next for ``state``; ``None`` once the run is finished or failed."""
    if state.status != "running":
        return None
    cur, it = state.current, state.iteration
    if state.phase is None:
        first = 0 if state.branched_at is None else state.branched_at + 1
        return _enter(Phase.PLAN, first, Trigger.START)
    assert cur is not None
    match state.phase:
        case Phase.PLAN if state.best is None:
            if cur.harness_commit is None:
                return WriteInitialHarness(it)
            return _enter(Phase.EVAL, it, Trigger.EVALUATE_BASELINE)
        case Phase.PLAN:
            if not cur.item_ids:
                return PlanBatch(it, _batch_seed(state.seed, it))
            return _enter(Phase.ROLLOUT, it, Trigger.BEGIN_ROLLOUT)
        case Phase.ROLLOUT:
            if cur.rollout is None:
                best = state.best
                assert best is not None
                return RunRollout(it, best.harness_commit, best.adapter_tag, cur.item_ids)
            return _enter(Phase.FEEDBACK, it, Trigger.REVIEW)
        case Phase.FEEDBACK:
            if cur.decision is None:
                return AskFeedback(it, LEVERS_BY_MODE[state.mode or ""])
            lever = Trigger.EDIT if cur.decision.lever == "edit" else Trigger.TRAIN
            return _enter(Phase(lever.name), it, lever)
        case Phase.EDIT:
            assert cur.decision is not None and state.best is not None
            if cur.harness_commit is None and cur.abandoned is None:
                return ApplyEdit(it, state.best.harness_commit, cur.decision)
            return _enter(Phase.EVAL, it, Trigger.EVALUATE)
        case Phase.TRAIN:
            assert cur.decision is not None and state.best is not None
            if cur.adapter_tag is None and cur.abandoned is None:
                return TrainAdapter(
                    it,
                    state.best.harness_commit,
                    state.best.adapter_tag,
                    cur.item_ids,
                    cur.decision,
                )
            return _enter(Phase.EVAL, it, Trigger.EVALUATE)
        case Phase.EVAL:
            return _after_eval(state, now)
    raise InvalidEvent(f"no step defined for phase {state.phase}")


def _after_eval(state: RunState, now: float) -> Step:
    cur = state.current
    assert cur is not None
    if cur.score is None and cur.abandoned is None:
        cand = state.candidate
        assert cand is not None
        return Evaluate(cur.iteration, "val", cand)
    if cur.accepted is None:
        return Record(judge(state))
    reason = Budget.from_config(state.config).exhausted(state, now)
    if reason is None:
        return _enter(Phase.PLAN, cur.iteration + 1, Trigger.PLAN_NEXT)
    best = state.best
    assert best is not None
    if state.test_score is None:
        return Evaluate(cur.iteration, "test", best)
    return Record(
        (
            ev.RunFinished(
                reason=reason,
                best_iteration=best.iteration,
                best_score=best.score,
                test_score=state.test_score,
            ),
        )
    )
