"""The interfaces the orchestrator drives: task, agents, policy runner and trainer.

Each port takes and returns plain frozen values so that its results can be recorded as
events and any implementation (offline, Claude, hf, vLLM, a scripted test double) plugs in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from statemachine.events import DecisionMade, Event, RolloutCompleted
from statemachine.state import IterationRecord

__all__ = [
    "Components",
    "EvalRequest",
    "EvalResult",
    "FeedbackAgent",
    "FeedbackContext",
    "HarnessDraft",
    "MetaAgent",
    "PolicyRunner",
    "RecordsCalls",
    "RolloutRequest",
    "RolloutResult",
    "TaskSource",
    "TrainRequest",
    "TrainedAdapter",
    "Trainer",
]

Files = Mapping[str, bytes]


@runtime_checkable
class TaskSource(Protocol):
    """What the orchestrator needs of a task: its id, description and item ids per split."""

    id: str
    description: str

    def item_ids(self, split: str) -> Sequence[str]: ...

    def harness_template(self) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class HarnessDraft:
    files: dict[str, bytes]
    rationale: str


@dataclass(frozen=True)
class RolloutRequest:
    run_id: str
    iteration: int
    harness_commit: str
    harness: Files
    adapter_tag: str | None
    adapter_path: Path | None
    item_ids: tuple[str, ...]
    seed: int
    temperature: float | None = None  # forced on every call; None: the harness's own


@dataclass(frozen=True)
class RolloutResult:
    episodes: int
    failures: int
    mean_reward: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalRequest:
    run_id: str
    iteration: int
    split: str
    harness_commit: str
    harness: Files
    adapter_tag: str | None
    adapter_path: Path | None


@dataclass(frozen=True)
class EvalResult:
    score: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FeedbackContext:
    """What the Feedback Agent may read: train-split evidence only, never val/test labels."""

    run_id: str
    iteration: int
    levers: frozenset[str]
    harness: Files
    rollout: RolloutCompleted
    history: tuple[IterationRecord, ...]


@dataclass(frozen=True)
class TrainRequest:
    run_id: str
    iteration: int
    harness_commit: str
    base_adapter_path: Path | None
    item_ids: tuple[str, ...]
    decision: DecisionMade
    seed: int


@dataclass(frozen=True)
class TrainedAdapter:
    """A trained adapter folder and what went into it (becomes the tag's manifest)."""

    path: Path
    algorithm: str
    base_model: str
    config: dict[str, Any]
    metrics: dict[str, Any]


class MetaAgent(Protocol):
    name: str

    def initial_harness(self, task: TaskSource, *, run_id: str) -> HarnessDraft: ...


class FeedbackAgent(Protocol):
    name: str

    def decide(self, context: FeedbackContext) -> DecisionMade: ...


@runtime_checkable
class RecordsCalls(Protocol):
    """An agent backed by a model: what its last answer cost, as events to record.

    ``take_events`` returns the :class:`~statemachine.events.AgentCalled` and
    :class:`~statemachine.events.PatchRejected` events of the agent's last
    ``initial_harness`` or ``decide`` call, once; the orchestrator stores them before that
    call's own result.
    """

    def take_events(self) -> list[Event]: ...


class PolicyRunner(Protocol):
    def rollout(self, request: RolloutRequest) -> RolloutResult: ...

    def evaluate(self, request: EvalRequest) -> EvalResult: ...


class Trainer(Protocol):
    def train(self, request: TrainRequest) -> TrainedAdapter: ...


@dataclass(frozen=True)
class Components:
    task: TaskSource
    meta: MetaAgent
    feedback: FeedbackAgent
    runner: PolicyRunner
    trainer: Trainer | None = None
