"""Rollout metrics, checked by hand on a small batch of outcomes and calls."""

import pytest

from ledger.records import CallRow
from sia.runner.metrics import EpisodeOutcome, summarise


def outcome(n: int, item: str, reward: float, answer: str | None = "1", status: str = "ok"):
    return EpisodeOutcome(f"e{n}", item, status, "", answer, reward, 10.0)


def call(n: int, completion: int, finish: str = "stop") -> CallRow:
    return CallRow(
        "r",
        1,
        f"e{n}",
        0,
        0.0,
        "c",
        None,
        "{}",
        [1, 2],
        [7] * completion,
        [-0.1] * completion,
        finish,
        1.0,
    )


def test_groups_lengths_and_labels():
    outcomes = [
        outcome(0, "a", 1.0, "yes"),
        outcome(1, "a", 0.0, "maybe"),  # group a: mixed, variance 0.25
        outcome(2, "b", 0.0, "no"),
        outcome(3, "b", 0.0, None),  # group b: uniform; a parse failure
        outcome(4, "c", 0.0, None, status="timeout"),  # c ran once: not a group
    ]
    calls = [call(0, 4), call(1, 9, "length"), call(2, 2), call(3, 9, "length"), call(4, 5)]
    labels = {"yes", "no"}
    metrics = summarise(outcomes, calls, lambda answer: answer in labels)
    assert metrics["reward_mean"] == pytest.approx(0.2)
    assert metrics["groups"] == 2
    assert metrics["group_reward_var"] == pytest.approx((0.25 + 0.0) / 2)
    assert metrics["mixed_groups"] == 0.5
    assert metrics["invalid_answers"] == 1  # "maybe"
    assert metrics["parse_failures"] == 1 and metrics["timeouts"] == 1
    assert (metrics["completion_tokens_p50"], metrics["completion_tokens_p90"]) == (5, 9)
    assert metrics["completion_tokens_max"] == 9
    assert metrics["truncation_rate"] == pytest.approx(2 / 5)


def test_without_groups_or_labels_those_metrics_are_absent_not_zero():
    metrics = summarise([outcome(0, "a", 1.0), outcome(1, "b", 0.0)], [], lambda _: None)
    assert metrics["groups"] == 0
    assert metrics["group_reward_var"] is None and metrics["mixed_groups"] is None
    assert metrics["invalid_answers"] is None
    assert metrics["completion_tokens_p90"] is None and metrics["truncation_rate"] == 0.0
