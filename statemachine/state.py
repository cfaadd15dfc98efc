"""Run state and the pure fold that builds it: ``evolve(state, envelope) -> state``.

Nothing else may change a :class:`RunState`. ``evolve`` checks every event against the
phase table and the loop's invariants and raises :class:`InvalidEvent` or
:class:`IllegalTransition` when a history could not have been produced by a correct run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from statemachine import events as ev
from statemachine.errors import InvalidEvent
from statemachine.phases import Phase, Trigger, check_transition

__all__ = [
    "LEVERS_BY_MODE",
    "Candidate",
    "Envelope",
    "History",
    "IterationRecord",
    "RunState",
    "evolve",
    "fold",
]

#: Which levers the Feedback Agent may pull in each run mode.
LEVERS_BY_MODE: dict[str, frozenset[str]] = {
    "h": frozenset({"edit"}),
    "w": frozenset({"train"}),
    "w+h": frozenset({"edit", "train"}),
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """An event as it sits in the ledger: its place in the run and its recorded time."""

    seq: int
    ts: float
    event: ev.Event


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (harness commit, adapter) pair and its validation score."""

    iteration: int
    harness_commit: str
    adapter_tag: str | None
    score: float | None


@dataclass(frozen=True)
class IterationRecord:
    iteration: int
    phases: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    batch_seed: int | None = None
    rollout: ev.RolloutCompleted | None = None
    decision: ev.DecisionMade | None = None
    harness_commit: str | None = None  # set only when this iteration committed a harness
    adapter_tag: str | None = None  # set only when this iteration trained an adapter
    score: float | None = None
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    accepted: bool | None = None
    outcome: ev.OutcomeRecorded | None = None
    abandoned: str | None = None  # why EDIT/TRAIN produced no candidate
    rejected_patches: tuple[ev.PatchRejected, ...] = ()  # agent proposals that failed checks


class History(Sequence[IterationRecord]):
    """The closed iterations of a run: an immutable sequence with O(1) ``append``.

    A plain tuple would be copied whole each time an iteration closes, which makes the
    fold quadratic in the number of iterations.
    """

    __slots__ = ("_cache", "_last", "_len", "_prev")

    def __init__(self, prev: History | None = None, last: IterationRecord | None = None):
        self._prev, self._last = prev, last
        self._len = 0 if last is None else len(prev or ()) + 1
        self._cache: tuple[IterationRecord, ...] | None = None if last is not None else ()

    def append(self, record: IterationRecord) -> History:
        return History(self, record)

    def as_tuple(self) -> tuple[IterationRecord, ...]:
        if self._cache is None:
            items, node = [], self
            while node is not None and node._cache is None:
                items.append(node._last)
                node = node._prev
            base = node._cache if node is not None else ()
            self._cache = (*base, *reversed(items))
        return self._cache

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):  # type: ignore[override]
        return self.as_tuple()[index]

    def __iter__(self) -> Iterator[IterationRecord]:
        return iter(self.as_tuple())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and self.as_tuple() == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"History({list(self.as_tuple())!r})"


@dataclass(frozen=True)
class RunState:
    run_id: str
    last_seq: int = 0
    started_ts: float | None = None
    last_ts: float | None = None
    status: str = "empty"  # empty → running → done | failed
    task: str | None = None
    mode: str | None = None
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    parent: tuple[str, int] | None = None
    branched_at: int | None = None
    origin: Candidate | None = None  # the parent's best that a branched run starts from
    phase: Phase | None = None
    iteration: int = 0
    current: IterationRecord | None = None
    history: History = field(default_factory=History)
    best: Candidate | None = None
    test_score: float | None = None
    test_metrics: dict[str, Any] = field(default_factory=dict)
    tokens_used: int = 0
    agent_calls: int = 0
    agent_cost_usd: float = 0.0  # calls without a price on file add nothing
    resumes: int = 0
    interruptions: int = 0
    finish_reason: str | None = None
    error: str | None = None

    @property
    def iterations(self) -> tuple[IterationRecord, ...]:
        """Every iteration so far, the open one last."""
        closed = self.history.as_tuple()
        return (*closed, self.current) if self.current else closed

    @property
    def candidate(self) -> Candidate | None:
        """What this iteration evaluates: the best pair with this iteration's change on top."""
        cur = self.current
        if cur is None:
            return None
        if self.best is None:
            if cur.harness_commit is None:
                return None
            return Candidate(cur.iteration, cur.harness_commit, None, cur.score)
        return Candidate(
            cur.iteration,
            cur.harness_commit or self.best.harness_commit,
            cur.adapter_tag or self.best.adapter_tag,
            cur.score,
        )


def replace(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` without re-running ``__init__``: the fold's hot path.

    The fold copies the state a few times per event. The state classes keep a
    ``__dict__`` (no ``slots``) so a copy is two dict updates; the stock ``replace`` is
    about twenty times slower and would put 100k events well over a second.
    """
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


def _need(state: RunState, phase: Phase, event: ev.Event) -> IterationRecord:
    if state.phase is not phase or state.current is None:
        where = state.phase.value if state.phase else "no phase"
        raise InvalidEvent(f"{type(event).__name__} is only valid in {phase.value}, not {where}")
    it = getattr(event, "iteration", state.current.iteration)
    if it != state.current.iteration:
        raise InvalidEvent(
            f"{type(event).__name__} names iteration {it}, run is in {state.current.iteration}"
        )
    return state.current


def _start(state: RunState, event: ev.RunStarted | ev.RunBranched) -> RunState:
    if state.status != "empty":
        raise InvalidEvent(f"{type(event).__name__} must be the first event of run {state.run_id}")
    if event.mode not in LEVERS_BY_MODE:
        raise InvalidEvent(f"unknown mode {event.mode!r}")
    common = dict(
        status="running", task=event.task, mode=event.mode, seed=event.seed, config=event.config
    )
    if isinstance(event, ev.RunStarted):
        return replace(state, **common)
    best = Candidate(event.at_iteration, event.harness_commit, event.adapter_tag, event.best_score)
    return replace(
        state,
        **common,
        parent=(event.parent_run, event.parent_seq),
        branched_at=event.at_iteration,
        iteration=event.at_iteration,
        best=best,
        origin=best,
    )


def _enter(state: RunState, event: ev.PhaseEntered) -> RunState:
    phase, trigger = Phase(event.phase), Trigger(event.trigger)
    if phase in (Phase.DONE, Phase.FAILED):
        raise InvalidEvent(f"{phase.value} is entered by RunFinished/RunFailed, not PhaseEntered")
    check_transition(state.phase, trigger, phase)
    if phase is Phase.PLAN:
        expected = (
            state.iteration + 1 if state.phase is Phase.EVAL or state.branched_at is not None else 0
        )
        if event.iteration != expected:
            raise InvalidEvent(f"PLAN must open iteration {expected}, not {event.iteration}")
        history = state.history.append(state.current) if state.current else state.history
        current = IterationRecord(event.iteration, phases=(phase.value,))
        return replace(
            state, phase=phase, iteration=event.iteration, current=current, history=history
        )
    assert state.current is not None  # every non-initial phase follows a PLAN
    if event.iteration != state.iteration:
        raise InvalidEvent(
            f"{phase.value} names iteration {event.iteration}, run is in {state.iteration}"
        )
    if trigger is Trigger.EVALUATE_BASELINE and (
        state.best is not None or state.current.harness_commit is None
    ):
        raise InvalidEvent("baseline evaluation needs a first harness and no earlier best")
    if trigger is Trigger.BEGIN_ROLLOUT and state.best is None:
        raise InvalidEvent("a rollout needs an evaluated baseline harness")
    current = replace(state.current, phases=(*state.current.phases, phase.value))
    return replace(state, phase=phase, current=current)


def _agent_phase(state: RunState) -> Phase:
    """Where agents work: the Meta Agent before the first harness, the Feedback Agent later."""
    return Phase.PLAN if state.best is None else Phase.FEEDBACK


def _fact(state: RunState, event: ev.Event) -> RunState:
    match event:
        case ev.BatchPlanned():
            cur = _need(state, Phase.PLAN, event)
            cur = replace(cur, item_ids=event.item_ids, batch_seed=event.seed)
        case ev.HarnessCommitted():
            phase = Phase.EDIT if state.best is not None else Phase.PLAN
            cur = _need(state, phase, event)
            if cur.harness_commit is not None:
                raise InvalidEvent(f"iteration {cur.iteration} already committed a harness")
            cur = replace(cur, harness_commit=event.commit)
        case ev.RolloutCompleted():
            cur = replace(_need(state, Phase.ROLLOUT, event), rollout=event)
            state = replace(
                state, tokens_used=state.tokens_used + int(event.metrics.get("tokens", 0))
            )
        case ev.DecisionMade():
            cur = _need(state, Phase.FEEDBACK, event)
            allowed = LEVERS_BY_MODE[state.mode or ""]
            if event.lever not in allowed:
                raise InvalidEvent(f"lever {event.lever!r} is not allowed in mode {state.mode}")
            if event.lever == "edit" and not (event.edit and event.edit.get("files")):
                raise InvalidEvent("an edit decision must carry the files it changes")
            if event.lever == "train" and not event.algorithm:
                raise InvalidEvent("a train decision must name its algorithm")
            cur = replace(cur, decision=event)
        case ev.AdapterTagged():
            cur = _need(state, Phase.TRAIN, event)
            cur = replace(cur, adapter_tag=event.tag)
        case ev.Evaluated():
            cur = _need(state, Phase.EVAL, event)
            if event.split == "test":
                return replace(state, test_score=event.score, test_metrics=event.metrics)
            cand = state.candidate
            if cand is None or (event.harness_commit, event.adapter_tag) != (
                cand.harness_commit,
                cand.adapter_tag,
            ):
                raise InvalidEvent(
                    f"iteration {cur.iteration} evaluated something other than its candidate"
                )
            cur = replace(cur, score=event.score, eval_metrics=event.metrics)
        case ev.CandidateAccepted() | ev.CandidateRejected():
            cur = _need(state, Phase.EVAL, event)
            if cur.score is None or cur.accepted is not None:
                raise InvalidEvent(f"iteration {cur.iteration} cannot be judged now")
            accepted = isinstance(event, ev.CandidateAccepted)
            cur = replace(cur, accepted=accepted)
            if accepted:
                state = replace(state, best=state.candidate)
        case ev.CandidateAbandoned():
            if event.phase not in (Phase.EDIT.value, Phase.TRAIN.value):
                raise InvalidEvent(f"only EDIT or TRAIN can abandon a candidate, not {event.phase}")
            cur = _need(state, Phase(event.phase), event)
            made = cur.harness_commit if event.phase == Phase.EDIT.value else cur.adapter_tag
            if made is not None or cur.abandoned is not None:
                raise InvalidEvent(f"iteration {cur.iteration} already has its candidate")
            cur = replace(cur, abandoned=event.reason, accepted=False)
        case ev.OutcomeRecorded():
            cur = replace(_need(state, Phase.EVAL, event), outcome=event)
        case ev.AgentCalled():
            cur = _need(state, _agent_phase(state), event)
            state = replace(
                state,
                agent_calls=state.agent_calls + 1,
                agent_cost_usd=state.agent_cost_usd + (event.cost_usd or 0.0),
            )
        case ev.PatchRejected():
            cur = _need(state, _agent_phase(state), event)
            cur = replace(cur, rejected_patches=(*cur.rejected_patches, event))
        case _:
            raise InvalidEvent(f"no fold rule for {type(event).__name__}")
    return replace(state, current=cur)


def evolve(state: RunState, envelope: Envelope) -> RunState:
    """Fold one stored event into the state. Pure: the input state is not changed."""
    if envelope.seq != state.last_seq + 1:
        raise InvalidEvent(f"seq {envelope.seq} follows seq {state.last_seq}")
    event = envelope.event
    if state.status == "empty" and not isinstance(event, ev.RunStarted | ev.RunBranched):
        raise InvalidEvent(f"run {state.run_id} must begin with RunStarted or RunBranched")
    if state.status in ("done", "failed"):
        raise InvalidEvent(
            f"run {state.run_id} is {state.status}; {type(event).__name__} cannot follow"
        )
    match event:
        case ev.RunStarted() | ev.RunBranched():
            state = _start(state, event)
        case ev.PhaseEntered():
            state = _enter(state, event)
        case ev.RunResumed():
            state = replace(state, resumes=state.resumes + 1)
        case ev.RunInterrupted():
            state = replace(state, interruptions=state.interruptions + 1)
        case ev.RunFinished():
            check_transition(state.phase, Trigger.FINISH, Phase.DONE)
            history = state.history.append(state.current) if state.current else state.history
            state = replace(
                state,
                status="done",
                phase=Phase.DONE,
                history=history,
                current=None,
                finish_reason=event.reason,
            )
        case ev.RunFailed():
            if state.phase is not None:
                check_transition(state.phase, Trigger.FAIL, Phase.FAILED)
            state = replace(state, status="failed", phase=Phase.FAILED, error=event.error)
        case _:
            state = _fact(state, event)
    return replace(
        state,
        last_seq=envelope.seq,
        last_ts=envelope.ts,
        started_ts=state.started_ts if state.started_ts is not None else envelope.ts,
    )


def fold(run_id: str, envelopes: Iterable[Envelope], state: RunState | None = None) -> RunState:
    """Fold a run's envelopes, in seq order, starting from ``state`` (or an empty run)."""
    state = state or RunState(run_id)
    for envelope in envelopes:
        state = evolve(state, envelope)
    return state
