"""What the offline Feedback Agent reads off a rollout and the run's history.

Rollout metrics come from the policy runner; the keys read here are ``success_rate``,
``parse_failures`` (or ``parse_failure_rate``), ``timeouts``, ``crashes`` (counts of
episodes), ``reward_std``, ``mean_completion_tokens`` and, when the runner knows it,
``reward_binary``. Missing keys fall back to what ``RolloutCompleted`` itself carries.
History gives the realised validation gain of each earlier edit and training decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from statemachine.errors import ConfigError
from statemachine.events import RolloutCompleted
from statemachine.state import IterationRecord

__all__ = ["Diagnostics", "Thresholds", "diagnose", "edit_operators_tried"]


@dataclass(frozen=True)
class Thresholds:
    """The numbers the rules compare against; stored with every decision's diagnostics."""

    parse_failure_rate: float = 0.2  # share of episodes with no extractable answer
    timeout_rate: float = 0.1  # share of episodes that ran out of time
    rambling_fraction: float = 0.75  # mean completion length / max_tokens that means rambling
    rare_success_rate: float = 0.1  # below this, successes are rare
    few_good_samples: int = 3  # fewer successful episodes than this are "few"
    min_gain: float = 0.01  # a validation gain below this did not pay off
    window: int = 2  # how many recent decisions of one lever make a trend

    def __post_init__(self) -> None:
        for name in ("parse_failure_rate", "timeout_rate", "rare_success_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.rambling_fraction <= 0:
            raise ConfigError(f"rambling_fraction must be > 0, got {self.rambling_fraction}")
        if self.few_good_samples < 0 or self.window < 1 or self.min_gain < 0:
            raise ConfigError("few_good_samples ≥ 0, window ≥ 1 and min_gain ≥ 0 are required")


@dataclass(frozen=True)
class Diagnostics:
    episodes: int
    success_rate: float
    successes: int
    parse_failure_rate: float
    timeout_rate: float
    crash_rate: float
    reward_std: float | None
    binary_reward: bool
    mean_completion_tokens: float | None
    max_tokens: int | None
    recent_edit_gains: tuple[float, ...]
    recent_train_gains: tuple[float, ...]
    last_train_gain: float | None
    edits_tried: tuple[str, ...]
    reward_mean: float | None = None
    group_reward_var: float | None = None  # mean reward variance within an item's group
    mixed_group_rate: float | None = None  # share of groups whose rewards differ
    invalid_label_rate: float | None = None  # answers outside the task's label set
    completion_tokens_p90: float | None = None
    truncation_rate: float | None = None  # calls cut by max_tokens

    @property
    def rambling_ratio(self) -> float | None:
        """Mean completion length as a share of the token limit, when both are known."""
        if self.mean_completion_tokens is None or not self.max_tokens:
            return None
        return self.mean_completion_tokens / self.max_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), so the event round-trips through the ledger."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def diagnose(
    rollout: RolloutCompleted,
    history: Sequence[IterationRecord],
    config: Mapping[str, Any] | None,
    thresholds: Thresholds,
) -> Diagnostics:
    metrics = rollout.metrics
    episodes = max(0, int(rollout.episodes))
    success = _unit(metrics.get("success_rate"), rollout.mean_reward)
    timeouts = _count(metrics, "timeouts")
    crashes = _count(metrics, "crashes")
    if crashes is None:
        # Without a crash count, every failed episode that did not time out crashed.
        crashes = max(0, int(rollout.failures) - (timeouts or 0))
    binary = metrics.get("reward_binary")
    if binary is None:
        # Partial credit shows as a mean reward that differs from the share of successes.
        binary = "success_rate" not in metrics or math.isclose(
            success, float(rollout.mean_reward), abs_tol=1e-6
        )
    edits = _gains(history, "edit")
    trains = _gains(history, "train")
    return Diagnostics(
        episodes=episodes,
        success_rate=success,
        successes=round(success * episodes),
        parse_failure_rate=_rate(metrics, "parse_failure_rate", "parse_failures", episodes),
        timeout_rate=_share(timeouts, episodes),
        crash_rate=_share(crashes, episodes),
        reward_std=_number(metrics.get("reward_std")),
        binary_reward=bool(binary),
        mean_completion_tokens=_number(metrics.get("mean_completion_tokens")),
        max_tokens=_int((config or {}).get("max_tokens")),
        reward_mean=_number(metrics.get("reward_mean", rollout.mean_reward)),
        group_reward_var=_number(metrics.get("group_reward_var")),
        mixed_group_rate=_number(metrics.get("mixed_groups")),
        invalid_label_rate=(
            None
            if _count(metrics, "invalid_answers") is None
            else _share(_count(metrics, "invalid_answers"), episodes)
        ),
        completion_tokens_p90=_number(metrics.get("completion_tokens_p90")),
        truncation_rate=_number(metrics.get("truncation_rate")),
        recent_edit_gains=tuple(edits[-thresholds.window :]),
        recent_train_gains=tuple(trains[-thresholds.window :]),
        last_train_gain=trains[-1] if trains else None,
        edits_tried=edit_operators_tried(history),
    )


def edit_operators_tried(history: Sequence[IterationRecord]) -> tuple[str, ...]:
    """Operator names of every earlier edit decision, oldest first (with repeats)."""
    return tuple(
        str(rec.decision.edit.get("operator", ""))
        for rec in history
        if rec.decision is not None and rec.decision.lever == "edit" and rec.decision.edit
    )


def _gains(history: Sequence[IterationRecord], lever: str) -> list[float]:
    gains = []
    for rec in history:
        if rec.decision is None or rec.decision.lever != lever:
            continue
        if rec.outcome is not None:
            gains.append(float(rec.outcome.delta))
        elif rec.accepted is False:
            gains.append(0.0)  # rejected before its outcome was recorded: it gained nothing
    return gains


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _unit(value: Any, fallback: float) -> float:
    number = _number(value)
    number = float(fallback) if number is None else number
    return min(1.0, max(0.0, number))


def _count(metrics: Mapping[str, Any], key: str) -> int | None:
    number = _number(metrics.get(key))
    return max(0, int(number)) if number is not None else None


def _share(count: int | None, episodes: int) -> float:
    return min(1.0, count / episodes) if count and episodes else 0.0


def _rate(metrics: Mapping[str, Any], rate_key: str, count_key: str, episodes: int) -> float:
    rate = _number(metrics.get(rate_key))
    if rate is not None:
        return min(1.0, max(0.0, rate))
    return _share(_count(metrics, count_key), episodes)
