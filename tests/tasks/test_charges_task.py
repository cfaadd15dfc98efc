"""``charges-v1``: the task contract, its reward, and its harness template's extraction."""

import json
import types

import pytest

from sia.agents import RuleFeedbackAgent
from sia.agents.operators import ClosestLabel, ShowLabels, read_config
from tasks import get_task
from tasks.charges import CHARGES, ChargesConfig, ChargesTask, normalise_charge
from tasks.check import check_task
from tests.agents.conftest import context, rollout


@pytest.fixture(scope="module")
def task() -> ChargesTask:
    return get_task("charges", seed=3)


@pytest.fixture(scope="module")
def agent(task):
    module = types.ModuleType("charges_agent")
    exec(compile(task.harness_template()["agent.py"], "agent.py", "exec"), module.__dict__)
    return module


def test_the_bundled_task_passes_the_contract(task):
    assert "no-label-leakage" in check_task(task, seeds=(0, 7))
    assert len(CHARGES) >= 20
    for split, size in (("train", 240), ("val", 50), ("test", 50)):
        assert len(task.items(split)) == size
    labels = {item.answer for item in task.items("train")}
    assert len(labels) >= 20  # the train split covers the charges


def test_descriptions_vary_and_never_name_their_charge(task):
    items = [item for split in ("train", "val", "test") for item in task.items(split)]
    assert len({item.prompt for item in items}) == len(items)
    for item in items:
        assert item.answer not in item.prompt.lower()
    by_charge = {}
    for item in items:
        by_charge.setdefault(item.answer, set()).add(item.prompt)
    assert all(len(texts) > 1 for texts in by_charge.values())


def test_reward_and_label_check(task):
    item = next(i for i in task.items("val") if i.answer == "credit card fraud")
    for reply in ("credit card fraud", "Credit Card Fraud.", "  the crime of credit card fraud "):
        assert task.reward(item, reply) == 1.0
    for reply in ("fraud", "", "credit-card fraud", None):
        assert task.reward(item, reply) == 0.0
    assert task.valid_answer("Fraud.") is True and task.valid_answer("jaywalking") is False
    assert normalise_charge('"Theft."') == "theft"
    with pytest.raises(Exception, match="positive integer"):
        ChargesConfig(train=0)


@pytest.mark.parametrize(
    ("reply", "strategy", "expected"),
    [
        ("Theft.\nExplanation: he took it.", "first_line", "Theft"),
        ("Charge: robbery", "first_line", "robbery"),
        ("", "first_line", None),
        ("This is credit card fraud, not plain fraud.", "closest_label", "credit card fraud"),
        ("The defendant committed robbery and theft.", "closest_label", "robbery"),
        ("Extorsion", "closest_label", "extortion"),
        ("jaywalking", "closest_label", None),
    ],
)
def test_template_extraction(agent, reply, strategy, expected):
    assert agent.extract(reply, strategy, list(CHARGES)) == expected


def test_the_template_lists_labels_only_when_asked(agent, task):
    config = json.loads(task.harness_template()["harness.json"])
    item = task.public_item(task.item_ids("train")[0])
    assert "Charges:" not in json.dumps(agent.build_messages(item, config))
    shown = agent.build_messages(item, {**config, "show_labels": True})
    assert "Charges: theft, robbery" in shown[0]["content"]
    assert agent.build_prompt(item, config).startswith("Case: ")


def test_label_operators_apply_to_classification_harnesses_only(task):
    files, arith = task.harness_template(), get_task("arith").harness_template()
    shown = ShowLabels().apply(files)
    assert json.loads(shown.files["harness.json"])["show_labels"] is True
    closest = ClosestLabel().apply(files)
    assert json.loads(closest.files["harness.json"])["extraction"] == "closest_label"
    assert not ShowLabels().applies(arith) and not ClosestLabel().applies(arith)


def test_the_offline_agent_lists_the_labels_first(task):
    agent = RuleFeedbackAgent.for_task(task)
    files = task.harness_template()
    decision = agent.decide(context("h", files, rollout(0.1, invalid_answers=5)))
    assert decision.edit["operator"] == "label-list"
    assert read_config(files)["show_labels"] is False
