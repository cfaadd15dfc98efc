import json

import pytest

from sia.agents import AgentError
from sia.agents.operators import (
    ANSWER_FORMATS,
    AnswerFormat,
    CompletionPrompt,
    FewShot,
    ReduceSampling,
    ReselectFewShot,
    RetryOnParseFailure,
    RewordInstruction,
    SelfConsistency,
    SwitchExtraction,
    dump_config,
    read_config,
)

CONFIG = "harness.json"
ITEM = {"id": "add-47-38", "question": "What is 47 + 38?", "a": 47, "b": 38}


def apply(files, edit):
    return {**files, **{path: text.encode() for path, text in edit.files.items()}}


@pytest.fixture
def examples(task):
    return tuple(task.demonstrations(3))


@pytest.fixture
def operators(examples):
    return [
        AnswerFormat(),
        SwitchExtraction(),
        FewShot(examples, k=2),
        RetryOnParseFailure(),
        SelfConsistency(),
    ]


def test_config_round_trips_in_the_template_layout(template):
    assert dump_config(read_config(template)) == template["harness.json"].decode()


def test_read_config_tolerates_missing_or_broken_files():
    assert read_config({}) is None
    assert read_config({"harness.json": b"{not json"}) is None
    assert read_config({"harness.json": b"[1, 2]"}) is None


def test_each_operator_applies_once(template, operators):
    for op in operators:
        assert op.applies(template), op.name
        edit = op.apply(template)
        assert edit.operator == op.name
        assert list(edit.files) == ["harness.json"]
        assert all(isinstance(text, str) for text in edit.files.values())
        edited = apply(template, edit)
        assert edited["harness.json"] != template["harness.json"]
        assert not op.applies(edited), f"{op.name} applies twice"
        with pytest.raises(AgentError, match=op.name):
            op.apply(edited)


def test_operators_are_deterministic(template, operators):
    for op in operators:
        assert op.apply(template) == op.apply(template)


@pytest.mark.parametrize("reply", ["85", "47 + 38 = 85", "The answer is 85.\nWhat is 1 + 2?"])
def test_every_operator_leaves_a_harness_that_solves(
    template, operators, agent_module, fake_client, reply
):
    for op in [*operators, RewordInstruction(), ReduceSampling()]:
        files = template
        if not op.applies(files):  # reduce-sampling only undoes voting or retries
            files = apply(files, SelfConsistency().apply(files))
        edited = apply(files, op.apply(files))
        config = json.loads(edited["harness.json"])
        client = fake_client(reply)
        answer = agent_module(edited).solve(client, ITEM, config)
        expected = "2" if config["extraction"] == "last_integer" and "1 + 2" in reply else "85"
        assert answer == expected, op.name
        assert client.calls, op.name


def test_all_operators_stack_into_one_working_harness(
    template, operators, agent_module, fake_client
):
    files = template
    for op in operators:
        files = apply(files, op.apply(files))
    config = json.loads(files["harness.json"])
    assert config["samples"] == 5 and config["retries"] == 2 and len(config["few_shot"]) == 2
    client = fake_client("no idea", "85", "85", "84", "85", "x", "y", "z")
    assert agent_module(files).solve(client, ITEM, config) == "85"
    assert len(client.calls) == 5
    messages = client.calls[0]["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[0]["content"].endswith(ANSWER_FORMATS[0])


def test_answer_format_appends_to_the_system_prompt(template):
    edited = apply(template, AnswerFormat().apply(template))
    before = read_config(template)["system_prompt"]
    assert read_config(edited)["system_prompt"] == f"{before} {ANSWER_FORMATS[0]}"


def test_answer_format_does_not_apply_when_any_wording_is_present(template):
    config = {**read_config(template), "system_prompt": f"Be brief. {ANSWER_FORMATS[2]}"}
    assert not AnswerFormat().applies({**template, "harness.json": dump_config(config).encode()})


def test_few_shot_needs_examples(template):
    assert not FewShot(()).applies(template)
    assert not FewShot(({"item": ITEM, "answer": "85"},), k=0).applies(template)


def test_few_shot_takes_the_first_k_examples(template, examples):
    edited = apply(template, FewShot(examples, k=2).apply(template))
    assert read_config(edited)["few_shot"] == list(examples[:2])


def test_switch_extraction_targets_first_line(template):
    edit = SwitchExtraction().apply(template)
    assert json.loads(edit.files["harness.json"])["extraction"] == "first_line"
    assert "last_integer to first_line" in edit.summary


def test_reduce_sampling_applies_only_to_costly_harnesses(template):
    assert not ReduceSampling().applies(template)
    voting = apply(template, SelfConsistency().apply(template))
    config = read_config(apply(voting, ReduceSampling().apply(voting)))
    assert config["samples"] == 1 and config["retries"] == 0


def test_reword_always_applies_and_changes_the_wording(template):
    files = apply(template, AnswerFormat().apply(template))
    seen = []
    for round_ in range(6):
        op = RewordInstruction(round=round_)
        assert op.applies(files)
        edited = apply(files, op.apply(files))
        prompt = read_config(edited)["system_prompt"]
        assert edited["harness.json"] != files["harness.json"]
        assert sum(text in prompt for text in ANSWER_FORMATS) == 1
        assert prompt.startswith(read_config(template)["system_prompt"])
        seen.append(prompt)
    # Successive rounds walk through every other wording before repeating one.
    assert len(set(seen[:3])) == 3 and seen[3] == seen[0]


def test_reword_adds_a_wording_when_none_is_present(template):
    edited = apply(template, RewordInstruction(round=1).apply(template))
    assert read_config(edited)["system_prompt"].endswith(ANSWER_FORMATS[1])


def test_reword_keeps_line_breaks_of_the_prompt(template):
    config = {**read_config(template), "system_prompt": f"Line one.\nLine two. {ANSWER_FORMATS[0]}"}
    files = {**template, "harness.json": dump_config(config).encode()}
    prompt = read_config(apply(files, RewordInstruction().apply(files)))["system_prompt"]
    assert prompt == f"Line one.\nLine two. {ANSWER_FORMATS[1]}"


def test_operators_skip_harnesses_whose_agent_ignores_their_keys(template, operators):
    files = {**template, "agent.py": b"def solve(client, item, config):\n    return ''\n"}
    for op in [*operators, RewordInstruction(), ReduceSampling()]:
        assert not op.applies(files), op.name


def test_operators_skip_harnesses_without_config(template, operators):
    files = {"agent.py": template["agent.py"]}
    for op in [*operators, RewordInstruction()]:
        assert not op.applies(files), op.name


def test_completion_prompt_switches_format_and_brings_examples(
    template, examples, agent_module, fake_client
):
    op = CompletionPrompt(examples, k=2)
    edited = apply(template, op.apply(template))
    config = json.loads(edited["harness.json"])
    assert config["prompt_format"] == "completion"
    assert config["few_shot"] == [dict(e) for e in examples[:2]]
    assert not op.applies(edited)
    client = fake_client(" 85")
    assert agent_module(edited).solve(client, ITEM, config) == "85"
    lines = client.calls[0]["prompt"].split("\n")
    assert lines[-1] == "47 + 38 =" and len(lines) == 3


def test_completion_prompt_keeps_examples_already_shown(template, examples):
    with_shots = apply(template, FewShot(examples, k=1).apply(template))
    config = json.loads(CompletionPrompt(examples, k=2).apply(with_shots).files["harness.json"])
    assert config["few_shot"] == [dict(examples[0])]


def test_completion_prompt_needs_a_pattern_and_examples(template, examples):
    config = read_config(template)
    del config["completion_template"]
    assert not CompletionPrompt(examples).applies(
        {**template, "harness.json": dump_config(config).encode()}
    )
    assert not CompletionPrompt(()).applies(template)


def test_instructions_do_not_apply_to_a_completion_format_harness(template, examples):
    edited = apply(template, CompletionPrompt(examples).apply(template))
    assert not AnswerFormat().applies(edited)
    assert not RewordInstruction().applies(edited)


def test_reselect_few_shot_cycles_through_the_pool(template, task):
    pool = tuple(task.demonstrations(6))
    files = apply(template, FewShot(pool, k=2).apply(template))

    def proposed(round_):
        config = json.loads(ReselectFewShot(pool, k=2, round=round_).apply(files).files[CONFIG])
        return [shot["item"]["id"] for shot in config["few_shot"]]

    ids = [[e["item"]["id"] for e in pool[i : i + 2]] for i in (0, 2, 4)]
    assert proposed(0) == ids[1] and proposed(1) == ids[2]
    # Round 2 comes back to the set the harness shows already: nothing new to propose.
    assert not ReselectFewShot(pool, k=2, round=2).applies(files)
    assert proposed(3) == ids[1]


def test_reselect_few_shot_needs_shown_examples_and_a_second_set(template, task):
    pool = tuple(task.demonstrations(3))
    assert not ReselectFewShot(pool, k=2).applies(template)  # nothing shown yet
    files = apply(template, FewShot(pool, k=2).apply(template))
    assert not ReselectFewShot(pool, k=2).applies(files)  # only one full set in the pool
