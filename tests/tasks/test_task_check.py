"""check_task must catch each way a task can break the contract."""

import itertools

import pytest

from tasks import TaskCheckFailed, check_task, get_task, list_tasks
from tasks.arith import ArithConfig, ArithTask
from tasks.base import Item

SMALL = ArithConfig(train=12, val=6, test=6)


def small(cls: type[ArithTask]) -> ArithTask:
    return cls(seed=0, config=SMALL)


def failures(task: ArithTask) -> str:
    with pytest.raises(TaskCheckFailed) as info:
        check_task(task)
    return str(info.value)


class Unversioned(ArithTask):
    id = "arith"


class AnswerKeyInInput(ArithTask):
    def public_item(self, item_id):
        return {**super().public_item(item_id), "answer": "?"}


class AnswerValueInInput(ArithTask):
    def public_item(self, item_id):
        return {**super().public_item(item_id), "hint": int(self.item(item_id).answer)}


class NotJsonInput(ArithTask):
    def public_item(self, item_id):
        return {**super().public_item(item_id), "pair": {1, 2}}


class Overlapping(ArithTask):
    def splits(self, seed):
        splits = super().splits(seed)
        return {**splits, "val": [splits["train"][0], *splits["val"][1:]]}


class SamePromptDifferentId(ArithTask):
    def splits(self, seed):
        splits = super().splits(seed)
        twin = splits["train"][0]
        copy = Item(id="twin", prompt=twin.prompt, answer=twin.answer, meta=twin.meta)
        return {**splits, "test": [copy, *splits["test"][1:]]}


class Unseeded(ArithTask):
    _calls = itertools.count()

    def splits(self, seed):
        return super().splits(seed + next(self._calls))


class RewardTooHigh(ArithTask):
    def reward(self, item, answer_text):
        return 2.0 * super().reward(item, answer_text)


class RewardsEverything(ArithTask):
    def reward(self, item, answer_text):
        return 1.0


class IntegerReward(ArithTask):
    def reward(self, item, answer_text):
        return int(super().reward(item, answer_text))


class MissingSplit(ArithTask):
    def splits(self, seed):
        splits = super().splits(seed)
        del splits["test"]
        return splits


class BadTemplate(ArithTask):
    def harness_template(self):
        return {"agent.py": b"def answer(item):\n    return ''\n"}


class WrongSolveSignature(ArithTask):
    def harness_template(self):
        files = super().harness_template()
        return {**files, "agent.py": b"def solve(client, item):\n    return ''\n"}


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (Unversioned, "identity: id 'arith' is not of the form <name>-v<N>"),
        (AnswerKeyInInput, "no-label-leakage"),
        (AnswerValueInInput, "holds the answer as a value"),
        (NotJsonInput, "not JSON-serialisable"),
        (Overlapping, "train and val share 1 item id(s)"),
        (SamePromptDifferentId, "train and test share 1 prompt(s)"),
        (Unseeded, "deterministic: splits(0) differs between two calls"),
        (RewardTooHigh, "its own answer scores 2.0"),
        (RewardsEverything, "answer '' scores 1.0"),
        (IntegerReward, "its own answer scores 1, not 1.0"),
        (MissingSplit, "splits must be exactly ['train', 'val', 'test']"),
        (BadTemplate, "missing harness.json"),
        (WrongSolveSignature, "solve must take exactly (client, item, config)"),
    ],
)
def test_check_task_reports_the_broken_contract(cls, expected):
    assert expected in failures(small(cls))


def test_failure_message_is_one_line_and_names_the_task():
    message = failures(small(AnswerKeyInInput))
    assert "\n" not in message
    assert message.startswith("task arith-v1 fails")


def test_a_broken_split_shape_stops_the_remaining_checks():
    message = failures(small(MissingSplit))
    assert "fails 1 check(s)" in message


def test_bad_template_reports_the_missing_entry_point():
    class NoSolve(ArithTask):
        def harness_template(self):
            return {**super().harness_template(), "agent.py": b"x = 1\n"}

    assert "defines no top-level solve" in failures(small(NoSolve))


class Measured(ArithTask):
    """A measured reward: the reference answer scores 0.5, a wrong answer less."""

    answer_is_best = False

    def reward(self, item, answer_text):
        return 0.5 if answer_text == item.answer else 0.1


class MeasuredWrongBeatsReference(Measured):
    def reward(self, item, answer_text):
        return 0.5 if answer_text == item.answer else 0.7


class MeasuredReferenceScoresNothing(Measured):
    def reward(self, item, answer_text):
        return 0.0


def test_a_measured_reward_needs_its_reference_above_every_wrong_answer():
    assert "reward-range" in check_task(small(Measured))
    assert "answer '' scores 0.7" in failures(small(MeasuredWrongBeatsReference))
    assert "its own answer scores 0.0" in failures(small(MeasuredReferenceScoresNothing))


@pytest.mark.parametrize(
    "task_id",
    [
        pytest.param(task_id, marks=[pytest.mark.slow] if task_id == "trimul-v1" else [])
        for task_id in list_tasks()
    ],
)
def test_every_bundled_task_passes_the_contract(task_id):
    """trimul runs and times every sampled answer in a child process: slow, so marked."""
    assert len(check_task(get_task(task_id), seeds=(0, 3))) == 7
