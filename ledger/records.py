"""The values that go into and come out of the ledger.

Payloads are plain JSON objects: the ledger knows nothing of the event classes in
``statemachine``; a codec there turns them into ``NewEvent`` and back.
"""

from dataclasses import dataclass
from typing import Any

__all__ = [
    "EPISODE_PURPOSES",
    "EPISODE_STATUSES",
    "CallRow",
    "EpisodeRow",
    "EventRecord",
    "NewEvent",
    "Problem",
    "RunHead",
    "VerifyReport",
]

#: ``smoke``: one episode of an agent's proposed harness, run before it may be committed.
EPISODE_PURPOSES = ("rollout", "eval", "smoke")
EPISODE_STATUSES = ("ok", "error", "timeout")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a caller appends it; the ledger assigns run, seq, time and hashes."""

    type: str
    version: int
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"event type must be a non-empty string, got {self.type!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(
                f"event {self.type}: version must be an int >= 1, got {self.version!r}"
            )
        if not isinstance(self.payload, dict):
            raise ValueError(
                f"event {self.type}: payload must be a dict, got {type(self.payload).__name__}"
            )


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A stored event. ``hash`` covers every other field and chains to ``prev_hash``."""

    run_id: str
    seq: int
    ts: float
    type: str
    version: int
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class RunHead:
    """The last event of a run, as recorded by the append that wrote it."""

    run_id: str
    seq: int
    hash: str
    ts: float


@dataclass(frozen=True, slots=True)
class CallRow:
    """One model call captured at the gateway.

    ``logprobs`` are stored at float32 precision by every backend, so what is read back is
    the float32 rounding of what was appended. ``completion_text`` is the reply as the
    harness received it; ``temperature`` and ``top_p`` are the sampling parameters the
    logprobs refer to (0 = greedy). Ledgers written before schema 2 read back as ``""`` and
    ``None``.
    """

    run_id: str
    iteration: int
    episode_id: str
    call_index: int
    ts: float
    harness_commit: str
    adapter_tag: str | None
    messages_json: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: str
    latency_ms: float
    completion_text: str = ""
    temperature: float | None = None
    top_p: float | None = None


@dataclass(frozen=True, slots=True)
class EpisodeRow:
    """The outcome of one episode of a rollout or an evaluation."""

    run_id: str
    iteration: int
    purpose: str
    split: str
    episode_id: str
    item_id: str
    reward: float | None
    status: str
    reason: str
    n_calls: int
    duration_ms: float
    answer: str | None = None  # what the harness returned; None: no answer (or schema < 3)
    #: JSON of what the task measured behind the reward (``Task.reward_detail``); None: nothing.
    reward_detail: str | None = None

    def __post_init__(self) -> None:
        if self.purpose not in EPISODE_PURPOSES:
            raise ValueError(
                f"episode purpose must be one of {EPISODE_PURPOSES}, got {self.purpose!r}"
            )
        if self.status not in EPISODE_STATUSES:
            raise ValueError(
                f"episode status must be one of {EPISODE_STATUSES}, got {self.status!r}"
            )


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect found by chain verification, at the seq where it shows.

    ``kind`` is one of: ``bad_start`` (the run does not begin at seq 1), ``gap`` (``seq`` is
    missing), ``duplicate`` (more than one event has ``seq``), ``broken_link`` (``prev_hash``
    is not the previous event's hash), ``hash_mismatch`` (the event's fields or payload no
    longer match its hash), ``foreign_run`` (a row of another run), ``truncated`` (the head
    is past the last event; ``seq`` is the first missing one), ``beyond_head`` (events
    after the recorded head), ``head_mismatch`` (the head's hash differs from the last
    event's), ``missing_head`` (events but no head).
    """

    seq: int
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of verifying one run's hash chain against its stored head."""

    run_id: str
    n_events: int
    head_seq: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems
