"""The offline Feedback Agent: named rules firing on crafted rollouts and histories."""

import itertools
import json

import pytest

from sia.agents import AgentError, RuleFeedbackAgent, Thresholds, diagnose
from sia.agents.operators import ANSWER_FORMATS, SelfConsistency, read_config
from statemachine.codec import decode, encode
from statemachine.errors import ConfigError
from statemachine.state import LEVERS_BY_MODE

ALL_OPERATORS = (
    "answer-format",
    "switch-extraction",
    "completion-prompt",
    "few-shot",
    "retry-on-parse-failure",
    "self-consistency",
)


def with_edit(files, edit):
    """The harness after an edit payload (``DecisionMade.edit``) is applied."""
    return {**files, **{p: t.encode() for p, t in edit["files"].items()}}


def tried_all(make_record):
    return [
        make_record(i + 1, "edit", operator=name, delta=0.0, accepted=False)
        for i, name in enumerate(ALL_OPERATORS)
    ]


def test_parse_failures_high_edits_the_answer_format(
    feedback, template, make_context, make_rollout
):
    roll = make_rollout(0.25, parse_failures=6)
    decision = feedback.decide(make_context("w+h", template, roll))
    assert decision.lever == "edit"
    assert "parse-failures-high" in decision.rules
    assert decision.edit["operator"] == "answer-format"
    assert decision.agent == "offline-feedback"
    assert decision.rationale.startswith("Edit the harness (answer-format). parse-failures-high")


def test_parse_failures_move_on_to_extraction_once_the_format_was_tried(
    feedback, template, make_context, make_rollout, make_record
):
    history = [make_record(1, "edit", operator="answer-format", delta=-0.02, accepted=False)]
    decision = feedback.decide(
        make_context("w+h", template, make_rollout(0.25, parse_failures=6), history)
    )
    assert decision.edit["operator"] == "switch-extraction"


def test_parse_failure_rate_may_be_given_directly(feedback, template, make_context, make_rollout):
    decision = feedback.decide(
        make_context("w+h", template, make_rollout(0.25, parse_failure_rate=0.5))
    )
    assert "parse-failures-high" in decision.rules


def test_rambling_completions_fire_against_max_tokens(
    feedback, template, make_context, make_rollout
):
    decision = feedback.decide(
        make_context("w+h", template, make_rollout(0.25, mean_completion_tokens=15))
    )
    assert decision.lever == "edit"
    assert "rambling-completions" in decision.rules
    quiet = feedback.decide(
        make_context("w+h", template, make_rollout(0.25, mean_completion_tokens=4))
    )
    assert "rambling-completions" not in quiet.rules


def test_timeouts_cut_sampling(feedback, template, make_context, make_rollout):
    voting = with_edit(template, SelfConsistency().apply(template).to_payload())
    decision = feedback.decide(make_context("w+h", voting, make_rollout(0.3, timeouts=4)))
    assert decision.lever == "edit"
    assert "harness-timeouts" in decision.rules
    assert decision.edit["operator"] == "reduce-sampling"


def test_partial_credit_is_not_read_as_no_success(feedback, template, make_context, make_rollout):
    """A continuous reward (0.4 on average, no episode at 1.0) already carries signal."""
    partial = make_rollout(0.4, success_rate=0.0, reward_mean=0.4, reward_binary=False)
    decision = feedback.decide(make_context("w+h", template, partial))
    assert "no-successes" not in decision.rules


def test_no_successes_shows_examples(feedback, template, make_context, make_rollout):
    decision = feedback.decide(make_context("w+h", template, make_rollout(0.0)))
    assert decision.lever == "edit"
    assert "no-successes" in decision.rules
    assert decision.edit["operator"] == "completion-prompt"
    config = json.loads(decision.edit["files"]["harness.json"])
    assert config["prompt_format"] == "completion"
    few_shot = config["few_shot"]
    assert len(few_shot) == 2 and all(set(s) == {"item", "answer"} for s in few_shot)


def test_no_successes_after_the_pattern_was_tried_shows_chat_examples(
    feedback, template, make_context, make_rollout, make_record
):
    history = [make_record(1, "edit", operator="completion-prompt", delta=0.0, accepted=False)]
    decision = feedback.decide(make_context("w+h", template, make_rollout(0.0), history))
    assert decision.edit["operator"] == "few-shot"


def test_without_train_examples_few_shot_is_skipped(template, make_context, make_rollout):
    decision = RuleFeedbackAgent().decide(make_context("w+h", template, make_rollout(0.0)))
    assert decision.edit["operator"] == "answer-format"


def test_plateau_after_edits_trains(feedback, template, make_context, make_record):
    history = [
        make_record(1, "edit", operator="answer-format", delta=0.004, accepted=True),
        make_record(2, "edit", operator="switch-extraction", delta=0.0, accepted=False),
    ]
    decision = feedback.decide(make_context("w+h", template, history=history))
    assert decision.lever == "train"
    assert decision.rules[:1] == ("plateau-after-edits",)
    assert decision.algorithm == "grpo"
    assert decision.edit is None


def test_edits_that_paid_off_are_no_plateau(feedback, template, make_context, make_record):
    history = [
        make_record(1, "edit", operator="answer-format", delta=0.06, accepted=True),
        make_record(2, "edit", operator="switch-extraction", delta=0.0, accepted=False),
    ]
    decision = feedback.decide(make_context("w+h", template, history=history))
    assert "plateau-after-edits" not in decision.rules
    assert decision.lever == "edit"


def test_a_rejected_edit_without_outcome_counts_as_no_gain(
    feedback, template, make_context, make_record
):
    history = [
        make_record(1, "edit", operator="answer-format", delta=None, accepted=False),
        make_record(2, "edit", operator="few-shot", delta=None, accepted=False),
    ]
    decision = feedback.decide(make_context("w+h", template, history=history))
    assert "plateau-after-edits" in decision.rules


def test_edits_exhausted_trains_in_w_plus_h(feedback, template, make_context, make_record):
    decision = feedback.decide(make_context("w+h", template, history=tried_all(make_record)))
    assert decision.lever == "train"
    assert "edits-exhausted" in decision.rules
    assert decision.diagnostics["untried_operators"] == []


def test_edits_exhausted_rewords_in_mode_h(feedback, template, make_context, make_record):
    decision = feedback.decide(make_context("h", template, history=tried_all(make_record)))
    assert decision.lever == "edit"
    assert "edits-exhausted" in decision.rules
    assert decision.edit["operator"] == "reword-instruction"
    prompt = json.loads(decision.edit["files"]["harness.json"])["system_prompt"]
    # answer-format was tried once already, so the second wording comes next.
    assert prompt.endswith(ANSWER_FORMATS[1])


def test_training_stalled_edits(feedback, template, make_context, make_record):
    history = [
        make_record(1, "train", delta=0.0, accepted=False),
        make_record(2, "train", delta=0.005, accepted=True),
    ]
    decision = feedback.decide(make_context("w+h", template, history=history))
    assert decision.lever == "edit"
    assert "training-stalled" in decision.rules


@pytest.mark.parametrize(
    ("roll", "history", "algorithm", "rule"),
    [
        (dict(mean_reward=0.05), [], "entropic", "rare-successes"),
        (dict(mean_reward=0.125), [], "bon_bc", "few-good-samples"),
        (dict(mean_reward=0.5), [], "grpo", "binary-mixed-outcomes"),
        (dict(mean_reward=0.5, mixed_groups=0.5), [], "grpo", "binary-mixed-outcomes"),
        (dict(mean_reward=0.5, mixed_groups=0.0), [], "bon_bc", "uniform-groups"),
        (dict(mean_reward=0.5, success_rate=0.3), [], "grpo", "graded-reward"),
        (dict(mean_reward=0.5), [("train", -0.05)], "reinforce_kl", "training-drift"),
        (dict(mean_reward=0.05), [("train", -0.05)], "reinforce_kl", "training-drift"),
        (dict(mean_reward=0.5), [("train", 0.04)], "grpo", "binary-mixed-outcomes"),
    ],
)
def test_algorithm_rules(
    feedback, template, make_context, make_rollout, make_record, roll, history, algorithm, rule
):
    records = [
        make_record(i + 1, lever, delta=d, accepted=d > 0) for i, (lever, d) in enumerate(history)
    ]
    decision = feedback.decide(make_context("w", template, make_rollout(**roll), records))
    assert decision.lever == "train"
    assert decision.algorithm == algorithm
    assert decision.rules[-1] == rule
    assert decision.algorithm_reason


def test_binary_reward_flag_from_the_runner_wins(feedback, template, make_context, make_rollout):
    roll = make_rollout(0.5, success_rate=0.3, reward_binary=True)
    assert feedback.decide(make_context("w", template, roll)).algorithm_reason.startswith("a clean")


MODE_CASES = [
    dict(mean_reward=0.25),
    dict(mean_reward=0.25, parse_failures=8),
    dict(mean_reward=0.0),
    dict(mean_reward=1.0, reward_std=0.0),
    dict(mean_reward=0.3, timeouts=5, crashes=2),
    dict(mean_reward=0.05, failures=3),
]


@pytest.mark.parametrize("mode", ["h", "w", "w+h"])
@pytest.mark.parametrize("roll", MODE_CASES)
@pytest.mark.parametrize("history_kind", ["none", "edits-tried", "trains-stalled"])
def test_decisions_respect_the_mode(
    feedback, template, make_context, make_rollout, make_record, mode, roll, history_kind
):
    history = {
        "none": [],
        "edits-tried": tried_all(make_record),
        "trains-stalled": [make_record(i, "train", delta=0.0, accepted=False) for i in (1, 2)],
    }[history_kind]
    decision = feedback.decide(make_context(mode, template, make_rollout(**roll), history))
    assert decision.lever in LEVERS_BY_MODE[mode]
    if decision.lever == "edit":
        assert decision.edit["files"] and decision.algorithm is None
        new = with_edit(template, decision.edit)
        assert new["harness.json"] != template["harness.json"]
        assert read_config(new) is not None
    else:
        assert decision.algorithm and decision.edit is None
    assert {alt["lever"] for alt in decision.alternatives} == {"edit", "train"}
    for alt in decision.alternatives:
        assert set(alt) >= {"lever", "score", "why", "allowed"}
        assert alt["allowed"] == (alt["lever"] in LEVERS_BY_MODE[mode])
    assert decision.rules and decision.expected_effect.endswith(".")


def test_mode_h_always_finds_an_edit(feedback, template, make_context, make_record, make_rollout):
    """Every edit rejected: the harness never changes, yet each round proposes a new edit."""
    history, operators, prompts = [], [], []
    for i in range(1, 12):
        decision = feedback.decide(
            make_context("h", template, make_rollout(0.25, parse_failures=5), history)
        )
        assert decision.lever == "edit"
        operators.append(decision.edit["operator"])
        prompts.append(json.loads(decision.edit["files"]["harness.json"])["system_prompt"])
        history.append(
            make_record(i, "edit", operator=decision.edit["operator"], delta=-0.01, accepted=False)
        )
    assert set(operators[:6]) == set(ALL_OPERATORS)
    assert operators[6:] == ["reword-instruction"] * 5
    # The rewordings never propose the same prompt twice in a row.
    assert all(a != b for a, b in itertools.pairwise(prompts[6:]))


def test_mode_h_reselects_examples_once_the_pattern_is_kept(
    feedback, template, make_context, make_record, make_rollout
):
    """A completion-format harness has no instruction to reword: other examples are shown."""
    completion = next(op for op in feedback.operators if op.name == "completion-prompt")
    files = with_edit(template, completion.apply(template).to_payload())
    history = [
        make_record(i + 1, "edit", operator=name, delta=0.0, accepted=name == "completion-prompt")
        for i, name in enumerate(ALL_OPERATORS)
    ]
    shown = [read_config(files)["few_shot"]]
    for i in range(len(history) + 1, len(history) + 4):
        decision = feedback.decide(make_context("h", files, make_rollout(0.3), history))
        assert decision.edit["operator"] == "reselect-few-shot"
        shown.append(json.loads(decision.edit["files"]["harness.json"])["few_shot"])
        history.append(
            make_record(i, "edit", operator="reselect-few-shot", delta=-0.01, accepted=False)
        )
    firsts = [[shot["item"]["id"] for shot in shots] for shots in shown]
    assert len({tuple(ids) for ids in firsts}) == len(firsts)


def test_accepted_edits_stack_until_training(
    feedback, template, make_context, make_record, make_rollout
):
    """Every edit accepted with a gain: operators stack, then the agent turns to training."""
    files, history, levers = template, [], []
    for i in range(1, 9):
        decision = feedback.decide(make_context("w+h", files, make_rollout(0.3), history))
        levers.append(decision.lever)
        if decision.lever == "edit":
            files = with_edit(files, decision.edit)
        history.append(
            make_record(
                i,
                decision.lever,
                operator=(decision.edit or {}).get("operator", ""),
                delta=0.05,
                accepted=True,
            )
        )
    # answer-format, completion-prompt (which brings the few-shot examples), self-consistency;
    # extraction and retry fixes wait for a rollout that shows their failure mode.
    assert levers[:3] == ["edit"] * 3
    assert levers[3] == "train"
    config = read_config(files)
    assert config["samples"] == 5 and config["prompt_format"] == "completion"
    assert config["extraction"] == "last_integer" and config["retries"] == 0


def test_symptom_specific_edits_wait_for_their_symptom(
    feedback, template, make_context, make_rollout
):
    clean = feedback.decide(make_context("h", template, make_rollout(0.3)))
    assert "switch-extraction" not in clean.diagnostics["untried_operators"]
    assert "retry-on-parse-failure" not in clean.diagnostics["untried_operators"]
    failing = feedback.decide(make_context("h", template, make_rollout(0.3, parse_failures=2)))
    assert {"switch-extraction", "retry-on-parse-failure"} <= set(
        failing.diagnostics["untried_operators"]
    )


def test_decisions_are_deterministic(feedback, template, make_context, make_rollout, make_record):
    ctx = make_context(
        "w+h", template, make_rollout(0.2, parse_failures=4), tried_all(make_record)[:2]
    )
    assert feedback.decide(ctx) == feedback.decide(ctx)


def test_decision_round_trips_through_the_event_codec(
    feedback, template, make_context, make_rollout
):
    decision = feedback.decide(make_context("w+h", template, make_rollout(0.25, parse_failures=6)))
    name, version, payload = encode(decision)
    assert decode(name, version, json.loads(json.dumps(payload))) == decision


def test_expected_effect_names_the_best_score(feedback, template, make_context, make_record):
    history = [
        make_record(1, "edit", operator="answer-format", delta=0.1, accepted=True, score=0.42)
    ]
    decision = feedback.decide(make_context("w+h", template, history=history))
    assert "(0.420)" in decision.expected_effect


def test_harness_without_config_cannot_be_edited(feedback, template, make_context):
    bare = {"agent.py": template["agent.py"]}
    with pytest.raises(AgentError, match=r"harness\.json"):
        feedback.decide(make_context("h", bare))
    assert feedback.decide(make_context("w+h", bare)).lever == "train"


def test_diagnostics_fall_back_to_rollout_fields(make_rollout):
    roll = make_rollout(0.5, episodes=10, failures=3, timeouts=1)
    diag = diagnose(roll, (), {"max_tokens": 16}, Thresholds())
    assert diag.timeout_rate == pytest.approx(0.1)
    assert diag.crash_rate == pytest.approx(0.2)  # failures that were not timeouts
    assert diag.successes == 5 and diag.max_tokens == 16
    assert diag.reward_std is None and diag.binary_reward


@pytest.mark.parametrize(
    "bad",
    [dict(parse_failure_rate=1.5), dict(window=0), dict(min_gain=-1), dict(rambling_fraction=0)],
)
def test_thresholds_are_validated(bad):
    with pytest.raises(ConfigError):
        Thresholds(**bad)


def test_agent_needs_two_wordings():
    with pytest.raises(AgentError, match="two"):
        RuleFeedbackAgent(instructions=("Only one.",))
