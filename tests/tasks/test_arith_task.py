import json

import pytest

from tasks import TaskError, check_task, get_task, list_tasks, register_task, registry
from tasks.arith import ArithConfig, ArithTask
from tasks.base import SPLITS, Item


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_check_task_passes_for_arith(seed):
    names = check_task(ArithTask(seed=seed))
    assert names == (
        "identity",
        "splits-shape",
        "deterministic",
        "disjoint-splits",
        "no-label-leakage",
        "reward-range",
        "harness-template",
    )


def test_check_task_passes_for_small_splits(small_arith):
    check_task(small_arith, seeds=(0, 5))


def test_default_split_sizes():
    task = ArithTask()
    assert [len(task.items(s)) for s in SPLITS] == [200, 50, 50]


def test_split_sizes_are_configurable(small_arith):
    assert [len(small_arith.items(s)) for s in SPLITS] == [30, 10, 10]


def test_same_seed_gives_equal_splits_in_fresh_instances():
    first, second = ArithTask(seed=11), ArithTask(seed=11)
    for split in SPLITS:
        assert first.items(split) == second.items(split)
        assert first.item_ids(split) == second.item_ids(split)


def test_splits_of_a_seed_do_not_depend_on_the_instance_seed():
    assert ArithTask(seed=0).splits(4) == ArithTask(seed=9).splits(4)


def test_different_seeds_give_different_splits():
    assert ArithTask(seed=0).item_ids("train") != ArithTask(seed=1).item_ids("train")


def test_items_are_two_digit_sums():
    task = ArithTask()
    for split in SPLITS:
        for item in task.items(split):
            a, b = item.meta["a"], item.meta["b"]
            assert 10 <= a <= 99 and 10 <= b <= 99
            assert item.prompt == f"What is {a} + {b}?"
            assert item.answer == str(a + b)


def test_a_pair_and_its_mirror_never_sit_in_two_splits():
    task = ArithTask()
    seen: dict[frozenset[int], str] = {}
    for split in SPLITS:
        for item in task.items(split):
            key = frozenset((item.meta["a"], item.meta["b"]))
            assert seen.setdefault(key, split) == split


@pytest.mark.parametrize(
    "sizes", [dict(train=0), dict(val=-1), dict(test=2.5), dict(train=4000, val=50, test=50)]
)
def test_bad_split_sizes_are_refused(sizes):
    with pytest.raises(TaskError, match="arith"):
        ArithConfig(**sizes)


def test_public_item_is_the_input_only(small_arith):
    item = small_arith.items("test")[0]
    public = small_arith.public_item(item.id)
    assert public == {
        "id": item.id,
        "question": item.prompt,
        "a": item.meta["a"],
        "b": item.meta["b"],
    }
    assert item.answer not in json.dumps(public)


def test_unknown_item_and_split_raise_task_error(small_arith):
    with pytest.raises(TaskError, match="no item"):
        small_arith.public_item("add-1-1")
    with pytest.raises(TaskError, match="no split"):
        small_arith.items("dev")


def test_split_of_names_the_items_split(small_arith):
    for split in SPLITS:
        assert small_arith.split_of(small_arith.item_ids(split)[0]) == split


def test_demonstrations_come_from_train_with_answers(small_arith):
    demos = small_arith.demonstrations(3)
    assert len(demos) == 3
    train = {item.id: item for item in small_arith.items("train")}
    for demo in demos:
        assert demo["item"] == small_arith.public_item(demo["item"]["id"])
        assert demo["answer"] == train[demo["item"]["id"]].answer


@pytest.mark.parametrize(
    ("text", "reward"),
    [
        ("85", 1.0),
        (" 85\n", 1.0),
        ("+85", 1.0),
        ("085", 1.0),
        ("86", 0.0),
        ("-85", 0.0),
        ("85.0", 0.0),
        ("85 apples", 0.0),
        ("The answer is 85", 0.0),
        ("8_5", 0.0),
        ("\uff18\uff15", 0.0),  # full-width digits: int() would accept them
        ("", 0.0),
        ("eighty-five", 0.0),
    ],
)
def test_reward_compares_the_stripped_integer(text, reward):
    task = ArithTask()
    item = Item(id="add-47-38", prompt="What is 47 + 38?", answer="85", meta={"a": 47, "b": 38})
    assert task.reward(item, text) == reward
    assert isinstance(task.reward(item, text), float)


def test_reward_of_a_non_string_is_zero():
    task = ArithTask()
    assert task.reward(task.items("val")[0], None) == 0.0  # type: ignore[arg-type]


def test_harness_template_files():
    files = ArithTask().harness_template()
    assert sorted(files) == ["agent.py", "harness.json"]
    assert all(isinstance(data, bytes) for data in files.values())
    config = json.loads(files["harness.json"])
    assert config == {
        "prompt_format": "chat",
        "system_prompt": config["system_prompt"],
        "user_template": "What is {a} + {b}?",
        "max_tokens": 16,
        "temperature": 0.0,
        "extraction": "last_integer",
        "retries": 0,
        "few_shot": [],
        "completion_template": "{a} + {b} =",
    }
    # Every prompt token costs a 135M model accuracy.
    assert len(config["system_prompt"].split()) <= 16


def test_registry_lists_and_resolves_tasks():
    assert "arith-v1" in list_tasks()
    by_name, by_id = get_task("arith", seed=4), get_task("arith-v1", seed=4)
    assert by_name.id == by_id.id == "arith-v1"
    assert by_name.seed == 4
    assert by_name.item_ids("train") == by_id.item_ids("train")


def test_unknown_task_is_one_line_naming_known_tasks():
    with pytest.raises(TaskError) as info:
        get_task("go")
    message = str(info.value)
    assert "\n" not in message
    assert "'go'" in message and "arith-v1" in message


def test_a_bare_name_resolves_to_its_highest_version(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    class ArithV2(ArithTask):
        id = "arith-v2"

    register_task("arith-v2", lambda seed: ArithV2(seed=seed))
    register_task("arith-v10", lambda seed: ArithV2(seed=seed))
    assert [t for t in list_tasks() if t.startswith("arith")] == [
        "arith-v1",
        "arith-v10",
        "arith-v2",
    ]
    assert get_task("arith-v1").id == "arith-v1"
    assert get_task("arith").id == "arith-v2"  # the factory registered as v10 builds v2


@pytest.mark.parametrize("task_id", ["arith", "Arith-v1", "arith-v", "-v1"])
def test_register_refuses_unversioned_ids(monkeypatch, task_id):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    with pytest.raises(TaskError, match="<name>-v<N>"):
        register_task(task_id, ArithTask)


def test_register_refuses_a_second_factory_for_an_id(monkeypatch):
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    with pytest.raises(TaskError, match="already registered"):
        register_task("arith-v1", ArithTask)
