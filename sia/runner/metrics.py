"""Summaries of a batch of episodes: the metrics a rollout or evaluation reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ledger.records import CallRow

__all__ = ["EpisodeOutcome", "summarise"]


@dataclass(frozen=True)
class EpisodeOutcome:
    """One finished episode as the runner saw it; failed episodes score 0."""

    episode_id: str
    item_id: str
    status: str
    reason: str
    answer: str | None
    reward: float
    duration_ms: float


def summarise(outcomes: Sequence[EpisodeOutcome], calls: Sequence[CallRow]) -> dict[str, Any]:
    """Rates and counts over ``outcomes`` and the model calls they made."""
    episodes = len(outcomes)
    rewards = [outcome.reward for outcome in outcomes]
    mean = sum(rewards) / episodes if episodes else 0.0
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / episodes) if episodes else 0.0
    completion = [len(call.completion_ids) for call in calls]
    tokens = sum(len(call.prompt_ids) + len(call.completion_ids) for call in calls)
    wall = sum(outcome.duration_ms for outcome in outcomes)
    return {
        "episodes": episodes,
        "success_rate": _share(sum(1 for r in rewards if r >= 1.0), episodes),
        "reward_std": std,
        "reward_binary": all(r in (0.0, 1.0) for r in rewards),
        # An episode that ran to the end but found no answer: the harness's extraction failed.
        "parse_failures": sum(1 for o in outcomes if o.status == "ok" and not o.answer),
        "timeouts": sum(1 for o in outcomes if o.status == "timeout"),
        "crashes": sum(1 for o in outcomes if o.status == "error"),
        "mean_completion_tokens": sum(completion) / len(completion) if completion else 0.0,
        "tokens": tokens,
        "calls": len(calls),
        "mean_calls_per_episode": _share(len(calls), episodes),
        "mean_episode_ms": wall / episodes if episodes else 0.0,
    }


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0
