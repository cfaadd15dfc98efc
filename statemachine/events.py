"""Everything that can happen to a run, as frozen dataclasses named in the past tense.

Events carry facts, not instructions: ids, digests, scores, the words an agent wrote. The
ledger envelope (run id, seq, timestamp, hashes) is added around them when they are stored.
Each class has a ``version``; an old payload shape is upcast on load (see ``codec``), never
rewritten in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "EVENT_TYPES",
    "AdapterTagged",
    "AgentCalled",
    "BatchPlanned",
    "CandidateAbandoned",
    "CandidateAccepted",
    "CandidateRejected",
    "DecisionMade",
    "Evaluated",
    "Event",
    "HarnessCommitted",
    "OutcomeRecorded",
    "PatchRejected",
    "PhaseEntered",
    "RolloutCompleted",
    "RunBranched",
    "RunFailed",
    "RunFinished",
    "RunInterrupted",
    "RunResumed",
    "RunStarted",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Base of all events; ``version`` is the payload schema version of the concrete class."""

    version: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    """A new run: its task, mode and full configuration (budgets, agents, seed)."""

    task: str
    mode: str
    seed: int
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunBranched(Event):
    """A run that starts from another run's state at ``parent_seq`` (its first event)."""

    parent_run: str
    parent_seq: int
    at_iteration: int
    task: str
    mode: str
    seed: int
    harness_commit: str
    adapter_tag: str | None
    best_score: float | None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PhaseEntered(Event):
    phase: str
    iteration: int
    trigger: str


@dataclass(frozen=True, slots=True)
class BatchPlanned(Event):
    """The training items a rollout will run on, drawn with a recorded seed."""

    iteration: int
    item_ids: tuple[str, ...]
    seed: int


@dataclass(frozen=True, slots=True)
class HarnessCommitted(Event):
    """A harness snapshot became a git commit; ``adopted`` marks one found after a crash."""

    iteration: int
    commit: str
    parent: str | None
    summary: str
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class RolloutCompleted(Event):
    iteration: int
    harness_commit: str
    adapter_tag: str | None
    episodes: int
    failures: int
    mean_reward: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecisionMade(Event):
    """The Feedback Agent's choice of lever, with everything it weighed.

    ``edit`` holds the proposed harness change (``summary`` and ``files``: path → new text,
    ``None`` to delete) when ``lever == "edit"``; ``algorithm`` names the RL recipe when
    ``lever == "train"``.
    """

    iteration: int
    lever: str
    agent: str
    rationale: str
    diagnostics: dict[str, Any] = field(default_factory=dict)
    alternatives: tuple[dict[str, Any], ...] = ()
    rules: tuple[str, ...] = ()
    algorithm: str | None = None
    algorithm_reason: str = ""
    expected_effect: str = ""
    edit: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AgentCalled(Event):
    """One call of a model-backed agent (Meta or Feedback) to its model: what it cost.

    ``cost_usd`` is ``None`` when no price is on file for ``model``; token counts are the
    provider's own. ``tools`` names the tools the reply asked for, in order.
    """

    iteration: int
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    latency_ms: float = 0.0
    stop_reason: str = ""
    tools: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PatchRejected(Event):
    """A harness change an agent proposed that failed validation, and why; nothing was
    committed. ``stage`` is where it failed: ``apply``, ``import`` or ``smoke``."""

    iteration: int
    agent: str
    attempt: int
    stage: str
    reason: str
    patch: str


@dataclass(frozen=True, slots=True)
class AdapterTagged(Event):
    """A trained LoRA adapter stored by digest and named by an annotated git tag."""

    iteration: int
    tag: str
    sha256: str
    algorithm: str
    harness_commit: str
    manifest: dict[str, Any] = field(default_factory=dict)
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class Evaluated(Event):
    iteration: int
    split: str
    harness_commit: str
    adapter_tag: str | None
    score: float
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CandidateAccepted(Event):
    iteration: int
    score: float
    previous_best: float | None


@dataclass(frozen=True, slots=True)
class CandidateAbandoned(Event):
    """EDIT or TRAIN produced no candidate (a patch that does not apply, training data
    without signal): the iteration closes as rejected, with the reason, and is not evaluated.
    """

    iteration: int
    phase: str
    reason: str


@dataclass(frozen=True, slots=True)
class CandidateRejected(Event):
    iteration: int
    score: float
    best_score: float
    best_iteration: int


@dataclass(frozen=True, slots=True)
class OutcomeRecorded(Event):
    """Closes a decision's audit: the realised change of the validation score."""

    iteration: int
    lever: str
    delta: float
    paid_off: bool


@dataclass(frozen=True, slots=True)
class RunInterrupted(Event):
    """The run process was stopped on request (Ctrl-C, SIGTERM) while ``step`` ran; the
    step's unfinished work was dropped and ``sia resume`` continues from here."""

    phase: str
    iteration: int
    step: str
    signal: str


@dataclass(frozen=True, slots=True)
class RunResumed(Event):
    """A process took the run over again; ``reconciled`` lists half-done effects it settled."""

    pid: int
    reconciled: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    reason: str
    best_iteration: int
    best_score: float | None
    test_score: float | None


@dataclass(frozen=True, slots=True)
class RunFailed(Event):
    phase: str
    error: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        RunStarted,
        RunBranched,
        PhaseEntered,
        BatchPlanned,
        HarnessCommitted,
        RolloutCompleted,
        AgentCalled,
        PatchRejected,
        DecisionMade,
        AdapterTagged,
        Evaluated,
        CandidateAccepted,
        CandidateRejected,
        CandidateAbandoned,
        OutcomeRecorded,
        RunInterrupted,
        RunResumed,
        RunFinished,
        RunFailed,
    )
}
