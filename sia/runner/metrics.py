"""Summaries of a batch of episodes: the metrics a rollout or evaluation reports."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
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
    detail: dict[str, Any] | None = None  # what the task measured behind the reward


def summarise(
    outcomes: Sequence[EpisodeOutcome],
    calls: Sequence[CallRow],
    valid_answer: Callable[[str], bool | None] | None = None,
) -> dict[str, Any]:
    """Rates and counts over ``outcomes`` and the model calls they made.

    Episodes of the same item form a group (a rollout runs each item ``group_size`` times):
    ``group_reward_var`` is the mean reward variance within groups and ``mixed_groups`` the
    share of groups whose rewards differ, both ``None`` when no item ran twice.
    ``valid_answer`` is the task's label check (``None`` from it: no closed answer set);
    ``invalid_answers`` counts answers outside the set, ``None`` when there is no set.
    """
    episodes = len(outcomes)
    rewards = [outcome.reward for outcome in outcomes]
    mean = sum(rewards) / episodes if episodes else 0.0
    completion = sorted(len(call.completion_ids) for call in calls)
    tokens = sum(len(call.prompt_ids) + len(call.completion_ids) for call in calls)
    wall = sum(outcome.duration_ms for outcome in outcomes)
    groups: dict[str, list[float]] = defaultdict(list)
    for outcome in outcomes:
        groups[outcome.item_id].append(outcome.reward)
    repeated = [group for group in groups.values() if len(group) > 1]
    answers = [o.answer for o in outcomes if o.status == "ok" and o.answer]
    verdicts = [valid_answer(answer) for answer in answers] if valid_answer else []
    checked = [verdict for verdict in verdicts if verdict is not None]
    return {
        "episodes": episodes,
        "success_rate": _share(sum(1 for r in rewards if r >= 1.0), episodes),
        "reward_mean": mean,
        "reward_std": math.sqrt(_variance(rewards)) if episodes else 0.0,
        "reward_binary": all(r in (0.0, 1.0) for r in rewards),
        "groups": len(repeated),
        "group_reward_var": (
            sum(_variance(group) for group in repeated) / len(repeated) if repeated else None
        ),
        "mixed_groups": (
            _share(sum(1 for group in repeated if len(set(group)) > 1), len(repeated))
            if repeated
            else None
        ),
        # An episode that ran to the end but found no answer: the harness's extraction failed.
        "parse_failures": sum(1 for o in outcomes if o.status == "ok" and not o.answer),
        "invalid_answers": sum(1 for verdict in checked if not verdict) if checked else None,
        "timeouts": sum(1 for o in outcomes if o.status == "timeout"),
        "crashes": sum(1 for o in outcomes if o.status == "error"),
        "mean_completion_tokens": sum(completion) / len(completion) if completion else 0.0,
        "completion_tokens_p50": _quantile(completion, 0.5),
        "completion_tokens_p90": _quantile(completion, 0.9),
        "completion_tokens_max": completion[-1] if completion else None,
        # Calls cut by the token limit: the model had more to say than max_tokens allowed.
        "truncation_rate": _share(sum(1 for c in calls if c.finish_reason == "length"), len(calls)),
        "tokens": tokens,
        "calls": len(calls),
        "mean_calls_per_episode": _share(len(calls), episodes),
        "mean_episode_ms": wall / episodes if episodes else 0.0,
    }


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def _quantile(ordered: Sequence[int], q: float) -> int | None:
    """The nearest-rank ``q`` quantile of an ascending sequence."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0
