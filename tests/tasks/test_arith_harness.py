"""The arith template harness, executed against a scripted OpenAI-compatible client."""

import json

import pytest

from tasks.arith import ArithTask


@pytest.fixture
def files():
    return ArithTask().harness_template()


@pytest.fixture
def config(files):
    return json.loads(files["harness.json"])


@pytest.fixture
def agent(files, agent_module):
    return agent_module(files)


ITEM = {"id": "add-47-38", "question": "What is 47 + 38?", "a": 47, "b": 38}


def test_solve_asks_once_and_extracts_the_answer(agent, config, fake_client):
    client = fake_client("47 + 38 = 85")
    assert agent.solve(client, ITEM, config) == "85"
    [call] = client.calls
    assert call["messages"] == [
        {"role": "system", "content": config["system_prompt"]},
        {"role": "user", "content": "What is 47 + 38?"},
    ]
    assert call["max_tokens"] == 16
    assert call["temperature"] == 0.0


@pytest.mark.parametrize(
    ("reply", "strategy", "answer"),
    [
        ("85", "last_integer", "85"),
        ("The sum of 47 and 38 is 85.", "last_integer", "85"),
        ("47 + 38 = 85", "first_integer", "47"),
        ("85, because 47 + 38 = 85", "first_integer", "85"),
        ("85\n\nWhat is 12 + 5?", "last_integer", "5"),
        ("85\n\nWhat is 12 + 5?", "first_line", "85"),
        ("\n47 + 38 = 85. Then 2 more", "first_line", "85"),
        ("The answer is 085 (I think 86)", "first_line", "85"),
        ("Answer: -3", "first_line", "-3"),
        ("47-38", "last_integer", "38"),
        ("no digits here", "last_integer", ""),
        ("", "first_line", ""),
    ],
)
def test_extraction_strategies(agent, config, fake_client, reply, strategy, answer):
    config = {**config, "extraction": strategy}
    assert agent.solve(fake_client(reply), ITEM, config) == answer


def test_missing_content_counts_as_no_answer(agent, config, fake_client):
    assert agent.solve(fake_client(None), ITEM, config) == ""


def test_unknown_extraction_is_an_error(agent, config, fake_client):
    with pytest.raises(ValueError, match="unknown extraction"):
        agent.solve(fake_client("85"), ITEM, {**config, "extraction": "magic"})


def test_no_retry_by_default(agent, config, fake_client):
    client = fake_client("I do not know", "85")
    assert agent.solve(client, ITEM, config) == ""
    assert len(client.calls) == 1


def test_retries_resample_until_an_answer_parses(agent, config, fake_client):
    client = fake_client("hmm", "well", "85", "99")
    config = {**config, "retries": 3, "retry_temperature": 0.9}
    assert agent.solve(client, ITEM, config) == "85"
    assert [call["temperature"] for call in client.calls] == [0.0, 0.9, 0.9]


def test_retries_give_up_with_an_empty_answer(agent, config, fake_client):
    client = fake_client("no")
    assert agent.solve(client, ITEM, {**config, "retries": 2}) == ""
    assert len(client.calls) == 3


def test_self_consistency_returns_the_majority(agent, config, fake_client):
    client = fake_client("84", "85", "oops", "85", "86")
    config = {**config, "samples": 5, "vote_temperature": 0.6}
    assert agent.solve(client, ITEM, config) == "85"
    assert [call["temperature"] for call in client.calls] == [0.6] * 5


def test_self_consistency_breaks_ties_by_first_seen(agent, config, fake_client):
    client = fake_client("86", "85", "85", "86")
    assert agent.solve(client, ITEM, {**config, "samples": 4}) == "86"


def test_few_shot_examples_use_the_user_template(agent, config, fake_client):
    shot = {"item": {"id": "add-12-30", "question": "What is 12 + 30?", "a": 12, "b": 30}}
    config = {**config, "few_shot": [{**shot, "answer": "42"}], "system_prompt": ""}
    client = fake_client("85")
    agent.solve(client, ITEM, config)
    assert client.calls[0]["messages"] == [
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": "What is 47 + 38?"},
    ]


def test_completion_format_continues_a_solved_pattern(agent, config, fake_client):
    shot = {"item": {"id": "add-12-30", "question": "What is 12 + 30?", "a": 12, "b": 30}}
    config = {**config, "prompt_format": "completion", "few_shot": [{**shot, "answer": "42"}]}
    client = fake_client(" 85")
    assert agent.solve(client, ITEM, config) == "85"
    (call,) = client.calls
    assert call["prompt"] == "12 + 30 = 42\n47 + 38 ="
    # The answer is the rest of the line; the model's next made-up line is never sampled.
    assert call["stop"] == ["\n"]
    assert "messages" not in call


def test_unknown_prompt_format_is_an_error(agent, config, fake_client):
    with pytest.raises(ValueError, match="prompt_format"):
        agent.solve(fake_client("85"), ITEM, {**config, "prompt_format": "telepathy"})


def test_solve_runs_on_every_public_item_of_the_task(agent, config, fake_client, small_arith):
    for item_id in small_arith.item_ids("val"):
        item = small_arith.item(item_id)
        public = small_arith.public_item(item_id)
        reply = f"{public['a']} + {public['b']} = {item.answer}"
        answer = agent.solve(fake_client(reply), public, config)
        assert small_arith.reward(item, answer) == 1.0
