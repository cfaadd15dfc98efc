"""trimul-v1: splits, the sandboxed reward on hand-written candidates, the harness template.

Each reward call starts a fresh interpreter that imports torch (~2 s here), so the fast
tests use one small split layout and tiny shapes; the full contract check on the default
splits runs with every bundled task in test_task_check.py (marked slow).
"""

import json
import math

import pytest

from tasks import check_task
from tasks.base import SPLITS, Item
from tasks.trimul import (
    SOLUTION,
    Limits,
    TrimulConfig,
    TrimulTask,
    extract_code,
    reference_source,
    speedup_reward,
)

TINY = {"batch": 1, "seq_len": 16, "dim": 32, "hidden": 32, "masked": True}
# Large enough in N that the batched-matmul contraction clearly beats the k loop.
SIZEABLE = {"batch": 1, "seq_len": 48, "dim": 32, "hidden": 64, "masked": True}

MISSING_OUTPUT_GATE = SOLUTION.replace(
    "return out.mul_(gates[:, 2 * H :]).reshape(B, N, N, C)", "return out.reshape(B, N, N, C)"
)
TRANSPOSED_CONTRACTION = SOLUTION.replace(
    "x = torch.matmul(a, b).permute(0, 2, 3, 1)", "x = torch.matmul(a, b).permute(0, 3, 2, 1)"
)
RAISES = """\
import os

def custom_kernel(data):
    raise ValueError("env=" + ",".join(sorted(os.environ)))
"""
LOOPS = """\
def custom_kernel(data):
    while True:
        pass
"""
HOGS_MEMORY = """\
import torch

def custom_kernel(data):
    return torch.empty(1 << 36)  # 256 GiB
"""


def make_item(shape: dict, distribution: str = "normal", seed: int = 5) -> Item:
    meta = {
        "shape": {**shape, "distribution": distribution},
        "reference_code": reference_source(),
        "seed": seed,
    }
    return Item(id="trimul-test", prompt="test", answer=SOLUTION, meta=meta)


@pytest.fixture(scope="module")
def task() -> TrimulTask:
    return TrimulTask()


@pytest.fixture(scope="module")
def agent():
    from tests.support.clients import load_agent

    return load_agent(TrimulTask().harness_template())


def reference_answer(agent) -> str:
    return agent.reference_answer({"reference_code": reference_source()})


# ----------------------------------------------------------------------- contract, splits


def test_check_task_passes_on_small_splits():
    check_task(TrimulTask(seed=2, config=TrimulConfig(train=1, val=1, test=1)), seeds=(3,))


def test_default_splits_are_small_distinct_and_cpu_sized(task):
    assert [len(task.items(s)) for s in SPLITS] == [12, 4, 4]
    items = [item for s in SPLITS for item in task.items(s)]
    assert len({item.id for item in items}) == len({item.prompt for item in items}) == 20
    for item in items:
        shape = item.meta["shape"]
        assert 16 <= shape["seq_len"] <= 64
        assert 32 <= shape["dim"] <= 128 and 32 <= shape["hidden"] <= 128
        assert shape["distribution"] in ("normal", "cauchy")
        assert f"N={shape['seq_len']}" in item.prompt and "custom_kernel" in item.prompt


def test_splits_depend_on_the_seed_only():
    assert TrimulTask(seed=4).splits(4) == TrimulTask(seed=9).splits(4)
    assert TrimulTask(seed=0).item_ids("train") != TrimulTask(seed=1).item_ids("train")


def test_public_item_is_the_problem_without_the_solution(task):
    item = task.items("val")[0]
    public = task.public_item(item.id)
    assert sorted(public) == ["id", "question", "reference_code", "shape"]
    assert public["shape"] == item.meta["shape"]
    assert "def reference_kernel" in public["reference_code"]
    assert SOLUTION not in json.dumps(public)


def test_task_metadata(task):
    assert task.id == "trimul-v1" and task.answer_is_best is False
    assert "speedup" in task.metric


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_bad_split_sizes_are_refused(size):
    from tasks import TaskError

    with pytest.raises(TaskError, match="trimul"):
        TrimulConfig(train=size)


# ----------------------------------------------------------------------- reward map, parsing


@pytest.mark.parametrize(
    ("speedup", "reward"),
    [(1.0, 0.5), (2.0, 0.75), (4.0, 1.0), (64.0, 1.0), (0.5, 0.25), (1 / 64, 0.05)],
)
def test_speedup_reward_map(speedup, reward):
    assert speedup_reward(speedup) == pytest.approx(reward)


@pytest.mark.parametrize("speedup", [0.0, -1.0, math.nan])
def test_speedup_reward_of_nonsense_is_the_floor(speedup):
    assert speedup_reward(speedup) == 0.05


def test_extract_code_accepts_raw_and_fenced_code():
    code = "def custom_kernel(data):\n    return data\n"
    assert extract_code(code) == code
    assert extract_code(f"Here:\n```python\n{code}```\nDone.") == code
    assert extract_code(f"```py\nimport torch\n```\n```python\n{code}```") == code
    assert extract_code(f"```python\n{code}") == code  # cut off by max_tokens
    assert extract_code("  \n") is None
    assert extract_code(None) is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "no code"),
        ("\x00 not an answer \x00", "syntax error"),
        ("def custom_kernel(data:\n    return", "syntax error"),
        ("```python\ndef kernel(data):\n    return data\n```", "no custom_kernel defined"),
    ],
)
def test_answers_that_cannot_run_fail_without_a_process(task, answer, reason):
    detail = task.reward_detail(make_item(TINY), answer)
    assert detail["reward"] == 0.0 and detail["correct"] is False
    assert detail["reason"].startswith(reason)
    assert detail["speedup"] is None
    assert task.reward(make_item(TINY), answer) == 0.0


# ----------------------------------------------------------------------- sandboxed runs


def test_reference_scores_half_and_the_solution_is_faster_and_correct(task, agent):
    item = make_item(SIZEABLE, distribution="cauchy")
    reference = task.reward_detail(item, reference_answer(agent))
    solution = task.reward_detail(item, f"```python\n{SOLUTION}```")
    assert reference["correct"] and reference["reason"] == "ok"
    assert reference["max_error"] <= 1e-6  # the same code on the same inputs
    assert reference["reward"] == pytest.approx(0.5, abs=0.15)  # timing noise, shared CPU
    assert solution["correct"] and solution["max_error"] <= 1e-4
    assert solution["speedup"] > 1.0
    assert solution["speedup"] > reference["speedup"]
    assert solution["reward"] > reference["reward"]
    assert set(solution) >= {
        "correct",
        "max_error",
        "speedup",
        "candidate_ms",
        "reference_ms",
        "reason",
    }
    json.dumps(solution)


@pytest.mark.parametrize(
    "wrong",
    [
        pytest.param(MISSING_OUTPUT_GATE, id="missing-output-gate"),
        pytest.param(TRANSPOSED_CONTRACTION, id="transposed-contraction", marks=pytest.mark.slow),
    ],
)
def test_wrong_solutions_score_zero_as_incorrect(task, wrong):
    assert wrong != SOLUTION
    detail = task.reward_detail(make_item(TINY), wrong)
    assert detail["reward"] == 0.0
    assert detail["correct"] is False and detail["reason"] == "incorrect"
    assert detail["max_error"] > 0.1
    assert detail["speedup"] is None


def test_code_that_raises_scores_zero_and_sees_no_secrets(task, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    detail = task.reward_detail(make_item(TINY), RAISES)
    assert detail["reward"] == 0.0
    assert detail["reason"].startswith("raised: ValueError: env=")
    assert "OPENAI_API_KEY" not in detail["reason"]


def test_code_that_loops_forever_times_out():
    task = TrimulTask(config=TrimulConfig(limits=Limits(timeout_s=4.0, cpu_s=4)))
    detail = task.reward_detail(make_item(TINY), LOOPS)
    assert detail["reward"] == 0.0
    assert detail["reason"].startswith("timeout")


def test_code_that_allocates_huge_memory_is_out_of_memory(task):
    detail = task.reward_detail(make_item(TINY), HOGS_MEMORY)
    assert detail["reward"] == 0.0
    assert detail["reason"].startswith("out of memory")


# ----------------------------------------------------------------------- harness template


def test_harness_template_files(task):
    files = task.harness_template()
    assert sorted(files) == ["agent.py", "harness.json"]
    config = json.loads(files["harness.json"])
    assert config["extraction"] == "fenced_block"
    assert config["fallback_to_reference"] is False
    assert config["max_tokens"] == 512


def test_template_agent_extracts_the_fenced_block(task, agent, fake_client):
    config = json.loads(task.harness_template()["harness.json"])
    item = task.public_item(task.item_ids("train")[0])
    code = "def custom_kernel(data):\n    return data[0]\n"
    client = fake_client(f"Sure! Here it is:\n```python\n{code}```\nIt is fast.")
    assert agent.solve(client, item, config) == code
    (call,) = client.calls
    prompt = call["messages"][-1]["content"]
    assert item["question"] in prompt and "def reference_kernel" in prompt
    assert call["max_tokens"] == 512 and call["temperature"] == 0.0


def test_template_agent_retries_then_falls_back_only_when_asked(task, agent, fake_client):
    config = json.loads(task.harness_template()["harness.json"])
    item = task.public_item(task.item_ids("train")[0])
    client = fake_client("I cannot write code.")
    assert agent.solve(client, item, {**config, "retries": 1}) == ""
    assert [c["temperature"] for c in client.calls] == [0.0, 0.7]
    fallback = agent.solve(fake_client("no code"), item, {**config, "fallback_to_reference": True})
    assert fallback == reference_answer(agent)
    assert "custom_kernel = reference_kernel" in fallback
    assert extract_code(fallback) == fallback
