"""The offline Feedback Agent's rule table: which lever, which edit, which RL algorithm.

Lever rules vote: each rule that fires adds its weights to the ``edit`` and ``train``
scores, and the allowed lever with the higher score wins (a tie goes to ``edit``: it is
cheaper and a rejected edit costs one evaluation). An edit rule also names the operators
that address what it saw, tried in order before the default operator order. The algorithm
rules are checked top to bottom and the first that fires picks the RL recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sia.agents.diagnostics import Diagnostics, Thresholds

__all__ = ["ALGORITHM_RULES", "LEVER_RULES", "AlgorithmRule", "Evidence", "LeverRule"]


@dataclass(frozen=True)
class Evidence:
    """Everything a rule may look at."""

    d: Diagnostics
    t: Thresholds
    untried: tuple[str, ...]  # edit operators that apply and were not tried in this run


@dataclass(frozen=True)
class LeverRule:
    name: str
    action: str  # the rule as one table line, "name → effect"
    when: Callable[[Evidence], bool]
    why: Callable[[Evidence], str]
    edit: float = 0.0
    train: float = 0.0
    operators: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlgorithmRule:
    name: str
    algorithm: str
    when: Callable[[Evidence], bool]
    why: Callable[[Evidence], str]


def _trend(gains: tuple[float, ...], e: Evidence) -> bool:
    return len(gains) >= e.t.window and all(g < e.t.min_gain for g in gains)


def _gains(gains: tuple[float, ...]) -> str:
    return ", ".join(f"{g:+.3f}" for g in gains)


LEVER_RULES: tuple[LeverRule, ...] = (
    LeverRule(
        "harness-timeouts",
        "timeouts ≥ threshold → edit: reduce-sampling",
        when=lambda e: e.d.timeout_rate >= e.t.timeout_rate,
        why=lambda e: (
            f"{e.d.timeout_rate:.0%} of episodes timed out; no adapter fixes a "
            "harness that does not finish"
        ),
        edit=3.0,
        train=-1.0,
        operators=("reduce-sampling",),
    ),
    LeverRule(
        "parse-failures-high",
        "parse failures ≥ threshold → edit: answer-format, extraction, retry",
        when=lambda e: e.d.parse_failure_rate >= e.t.parse_failure_rate,
        why=lambda e: (
            f"{e.d.parse_failure_rate:.0%} of replies held no parsable answer; "
            "that is a format problem the harness can fix"
        ),
        edit=3.0,
        # A closed move set (chess) is parsed best by showing it and reading a legal move;
        # those operators apply only to harnesses that read their keys.
        operators=(
            "tool-legal-moves",
            "legal-move-extraction",
            "answer-format",
            "switch-extraction",
            "retry-on-parse-failure",
        ),
    ),
    LeverRule(
        "rambling-completions",
        "completions near max_tokens → edit: completion prompt, answer-format, extraction",
        when=lambda e: (e.d.rambling_ratio or 0.0) >= e.t.rambling_fraction,
        why=lambda e: (
            f"completions average {e.d.mean_completion_tokens:.0f} of "
            f"{e.d.max_tokens} tokens; the model keeps talking after its answer"
        ),
        edit=1.0,
        operators=("completion-prompt", "answer-format", "switch-extraction"),
    ),
    LeverRule(
        "no-successes",
        "no episode succeeded → edit: completion prompt, few-shot, answer-format",
        # Partial credit (a continuous reward above 0) is signal even without a full success.
        when=lambda e: e.d.episodes > 0 and e.d.successes == 0 and not (e.d.reward_mean or 0.0),
        why=lambda e: (
            f"none of {e.d.episodes} episodes succeeded, so RL would see no reward "
            "signal; demonstrations can make successes appear"
        ),
        edit=2.0,
        train=-2.0,
        operators=("tool-mate-check", "completion-prompt", "few-shot", "answer-format"),
    ),
    LeverRule(
        "plateau-after-edits",
        "recent edits gained < min_gain → train",
        when=lambda e: _trend(e.d.recent_edit_gains, e),
        why=lambda e: (
            f"the last {len(e.d.recent_edit_gains)} edits moved validation by "
            f"{_gains(e.d.recent_edit_gains)}; the harness has plateaued"
        ),
        edit=-1.0,
        train=2.0,
    ),
    LeverRule(
        "training-stalled",
        "recent training gained < min_gain → edit",
        when=lambda e: _trend(e.d.recent_train_gains, e),
        why=lambda e: (
            f"the last {len(e.d.recent_train_gains)} adapters moved validation by "
            f"{_gains(e.d.recent_train_gains)}; more of the same training is unlikely to pay"
        ),
        edit=2.0,
        train=-1.0,
    ),
    LeverRule(
        "mixed-outcomes",
        "some but not all episodes succeed → train",
        when=lambda e: (
            0.0 < e.d.success_rate < 1.0 and (e.d.reward_std is None or e.d.reward_std > 0)
        ),
        why=lambda e: (
            f"{e.d.success_rate:.0%} of episodes succeeded: rewards vary, so a policy "
            "gradient has signal"
        ),
        train=1.0,
    ),
    LeverRule(
        "edits-exhausted",
        "no untried edit operator applies → train (in mode h: reword or reselect examples)",
        when=lambda e: not e.untried,
        why=lambda e: (
            "every edit operator has been applied or tried; only rewording the instruction "
            "or reselecting examples is left"
        ),
        edit=-3.0,
        train=2.0,
    ),
    LeverRule(
        "edits-available",
        "untried edit operators apply → edit",
        when=lambda e: bool(e.untried),
        why=lambda e: (
            f"{len(e.untried)} edit operator(s) untried ({', '.join(e.untried)}); "
            "an edit is cheap and reversible"
        ),
        edit=1.0,
    ),
)

ALGORITHM_RULES: tuple[AlgorithmRule, ...] = (
    AlgorithmRule(
        "training-drift",
        "reinforce_kl",
        when=lambda e: e.d.last_train_gain is not None and e.d.last_train_gain < -e.t.min_gain,
        why=lambda e: (
            f"the last adapter moved validation by {e.d.last_train_gain:+.3f}; a k3 "
            "KL penalty to the base keeps the next update from drifting further"
        ),
    ),
    AlgorithmRule(
        "rare-successes",
        "entropic",
        when=lambda e: e.d.success_rate < e.t.rare_success_rate,
        why=lambda e: (
            f"only {e.d.success_rate:.0%} of episodes succeed; entropic advantage "
            "weighting concentrates the update on the rare successes"
        ),
    ),
    AlgorithmRule(
        "few-good-samples",
        "bon_bc",
        when=lambda e: e.d.successes < e.t.few_good_samples,
        why=lambda e: (
            f"only {e.d.successes} successful episode(s): cloning the best samples "
            "is steadier than advantages estimated from so few"
        ),
    ),
    AlgorithmRule(
        "uniform-groups",
        "bon_bc",
        when=lambda e: e.d.mixed_group_rate == 0 and e.d.successes > 0,
        why=lambda e: (
            "no item's group of samples has both outcomes, so group-relative advantages are "
            "zero everywhere; cloning the successful samples is the signal there is"
        ),
    ),
    AlgorithmRule(
        "graded-reward",
        "grpo",
        when=lambda e: not e.d.binary_reward,
        why=lambda e: (
            "rewards are graded, not pass/fail; group-normalised advantages use their whole scale"
        ),
    ),
    AlgorithmRule(
        "binary-mixed-outcomes",
        "grpo",
        when=lambda e: True,
        why=lambda e: (
            f"a clean pass/fail reward with {e.d.success_rate:.0%} success"
            + (
                f" and {e.d.mixed_group_rate:.0%} of groups holding both outcomes"
                if e.d.mixed_group_rate is not None
                else ""
            )
            + "; group-normalised advantages (GRPO) need no value model"
        ),
    ),
)
