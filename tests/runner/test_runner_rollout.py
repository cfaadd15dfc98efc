"""Rollouts and evaluations end to end: tiny model, gateway, harness processes, recorder."""

import json
from collections.abc import Iterator

import pytest

import tasks
from ledger import InMemoryRecorder
from sia.gateway import Gateway
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from sia.ports import EvalRequest, PolicyRunner, RolloutRequest
from sia.runner import EpisodeBudget, HarnessRunner, RunnerError
from tests.gateway.fakes import ScriptedBackend

# Every item's behaviour is picked by the harness config, so one rollout shows them all.
MIXED_AGENT = b"""
import os, sys, time

def solve(client, item, config):
    mode = config["modes"].get(item["id"], "answer")
    if mode == "raise":
        raise RuntimeError("harness bug")
    if mode == "hang":
        time.sleep(600)
    if mode == "exit":
        sys.exit(2)
    if mode == "garbage":
        os._exit(0)
    if mode == "empty":
        return ""
    reply = client.chat.completions.create(
        model=config.get("model", "policy"),
        messages=[{"role": "user", "content": item["question"]}],
        max_tokens=4,
        temperature=0,
    )
    return reply.choices[0].message.content
"""


@pytest.fixture(scope="module")
def task() -> tasks.Task:
    return tasks.get_task("arith", seed=0)


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    model, tokenizer = build_tiny(seed=0)
    return HFPolicy(model, tokenizer)


@pytest.fixture
def recorder() -> Iterator[InMemoryRecorder]:
    with InMemoryRecorder() as ledger:
        yield ledger


def _rollout(task: tasks.Task, harness: dict[str, bytes], ids: tuple[str, ...]) -> RolloutRequest:
    return RolloutRequest(
        run_id="run-r",
        iteration=2,
        harness_commit="h1",
        harness=harness,
        adapter_tag=None,
        adapter_path=None,
        item_ids=ids,
        seed=11,
    )


def test_template_rollout_with_the_tiny_model(
    task: tasks.Task, policy: HFPolicy, recorder: InMemoryRecorder
) -> None:
    ids = tuple(task.item_ids("train")[:8])
    with Gateway(policy, max_batch=8, batch_wait_ms=10) as gateway:
        runner: PolicyRunner = HarnessRunner(task, gateway, recorder, concurrency=4)
        result = runner.rollout(_rollout(task, task.harness_template(), ids))
        batch_sizes = gateway.batch_sizes

    assert result.episodes == 8
    assert result.failures == 0
    assert 0.0 <= result.mean_reward <= 1.0
    metrics = result.metrics
    assert metrics["calls"] == 8
    assert metrics["timeouts"] == metrics["crashes"] == 0
    assert 0 < metrics["mean_completion_tokens"] <= 16
    assert metrics["tokens"] > metrics["calls"] * metrics["mean_completion_tokens"]
    assert 0.0 <= metrics["success_rate"] <= 1.0
    assert metrics["reward_std"] >= 0.0
    assert sum(batch_sizes) == 8

    episodes = recorder.read_episodes("run-r", 2, "rollout")
    calls = recorder.read_calls("run-r", 2)
    assert sorted(e.item_id for e in episodes) == sorted(ids)
    assert all(e.status == "ok" and e.n_calls == 1 and e.split == "train" for e in episodes)
    assert {c.episode_id for c in calls} == {e.episode_id for e in episodes}
    for call in calls:
        assert call.harness_commit == "h1" and call.adapter_tag is None
        assert len(call.completion_ids) == len(call.logprobs) > 0
        assert json.loads(call.messages_json)[-1]["role"] == "user"


def test_failing_episodes_fail_alone(task: tasks.Task, recorder: InMemoryRecorder) -> None:
    ids = tuple(task.item_ids("train")[:7])
    behaviours = ["raise", "hang", "exit", "garbage", "empty", "answer", "answer"]
    modes = dict(zip(ids, behaviours, strict=True))
    harness = {"agent.py": MIXED_AGENT, "harness.json": json.dumps({"modes": modes}).encode()}
    backend = ScriptedBackend(reply="no digits", delay_s=0.0)
    with Gateway(backend) as gateway:
        runner = HarnessRunner(task, gateway, recorder, concurrency=4, episode_timeout=4.0)
        result = runner.rollout(_rollout(task, harness, ids))

    rows = {row.item_id: row for row in recorder.read_episodes("run-r")}
    status = {mode: (rows[item].status, rows[item].reason) for item, mode in modes.items()}
    assert status["raise"][0] == "error" and "RuntimeError: harness bug" in status["raise"][1]
    assert status["hang"][0] == "timeout"
    assert status["exit"] == ("error", "harness called sys.exit(2)")
    assert status["garbage"][0] == "error" and "no result" in status["garbage"][1]
    assert status["empty"] == ("ok", "")
    assert status["answer"] == ("ok", "")
    assert all(rows[item].reward == 0.0 for item in ids)
    assert result.failures == 4
    assert result.metrics["timeouts"] == 1
    assert result.metrics["crashes"] == 3
    # "empty" returned nothing; the two "answer" episodes returned text with no number.
    assert result.metrics["parse_failures"] == 1
    assert result.metrics["calls"] == 2


def test_rewards_are_computed_from_the_private_items(
    task: tasks.Task, recorder: InMemoryRecorder
) -> None:
    ids = tuple(task.item_ids("train")[:3])
    answers = {item_id: task.item(item_id).answer for item_id in ids[:2]}
    agent = (
        "import json\n"
        f"ANSWERS = json.loads({json.dumps(json.dumps(answers))})\n"
        "def solve(client, item, config):\n"
        "    return ANSWERS.get(item['id'], '')\n"
    ).encode()
    with Gateway(ScriptedBackend()) as gateway:
        result = HarnessRunner(task, gateway, recorder).rollout(
            _rollout(task, {"agent.py": agent}, ids)
        )
    assert result.mean_reward == pytest.approx(2 / 3)
    assert result.metrics["success_rate"] == pytest.approx(2 / 3)
    assert result.metrics["parse_failures"] == 1


def test_evaluate_runs_the_whole_split(task: tasks.Task, recorder: InMemoryRecorder) -> None:
    agent = b"def solve(client, item, config):\n    return str(item['a'] + item['b'])\n"
    request = EvalRequest(
        run_id="run-e",
        iteration=0,
        split="val",
        harness_commit="h0",
        harness={"agent.py": agent},
        adapter_tag=None,
        adapter_path=None,
    )
    with Gateway(ScriptedBackend()) as gateway:
        result = HarnessRunner(task, gateway, recorder, concurrency=4).evaluate(request)

    assert result.score == pytest.approx(1.0)
    episodes = recorder.read_episodes("run-e", 0, "eval")
    assert len(episodes) == len(task.item_ids("val"))
    assert {e.split for e in episodes} == {"val"}


def test_adapter_is_active_for_the_rollout_only(
    task: tasks.Task, recorder: InMemoryRecorder, tmp_path
) -> None:
    backend = ScriptedBackend()
    ids = tuple(task.item_ids("train")[:2])
    request = RolloutRequest(
        run_id="run-a",
        iteration=1,
        harness_commit="h1",
        harness=task.harness_template(),
        adapter_tag="iter-1",
        adapter_path=tmp_path,
        item_ids=ids,
        seed=0,
    )
    with Gateway(backend) as gateway:
        HarnessRunner(task, gateway, recorder).rollout(request)

    assert backend.adapter_calls == [("load", "iter-1"), ("set", "iter-1"), ("set", None)]
    assert {c.adapter_tag for c in recorder.read_calls("run-a")} == {"iter-1"}


def test_call_budget_applies_per_episode(task: tasks.Task, recorder: InMemoryRecorder) -> None:
    config = {"retries": 5, "extraction": "last_integer", "max_tokens": 4}
    harness = {**task.harness_template(), "harness.json": json.dumps(config).encode()}
    ids = tuple(task.item_ids("train")[:2])
    with Gateway(ScriptedBackend(reply="none")) as gateway:
        runner = HarnessRunner(task, gateway, recorder, budget=EpisodeBudget(max_calls=3))
        result = runner.rollout(_rollout(task, harness, ids))

    rows = recorder.read_episodes("run-r")
    assert all(row.status == "error" and "RateLimitError" in row.reason for row in rows)
    assert all(row.n_calls == 3 for row in rows)
    assert result.metrics["calls"] == 6


def test_bad_harnesses_are_refused(task: tasks.Task, recorder: InMemoryRecorder) -> None:
    ids = tuple(task.item_ids("train")[:1])
    with Gateway(ScriptedBackend()) as gateway:
        runner = HarnessRunner(task, gateway, recorder)
        for harness in (
            {"harness.json": b"{}"},
            {"agent.py": b"", "harness.json": b"not json"},
            {"agent.py": b"", "../escape.py": b""},
        ):
            with pytest.raises(RunnerError):
                runner.rollout(_rollout(task, harness, ids))
        with pytest.raises(RunnerError):
            runner.rollout(_rollout(task, task.harness_template(), ()))


def test_a_rollout_cut_short_is_completed_with_the_recorded_episodes_reused(
    task: tasks.Task, policy: HFPolicy, recorder: InMemoryRecorder
) -> None:
    ids = tuple(task.item_ids("train")[:6])
    request = _rollout(task, task.harness_template(), ids)
    with Gateway(policy, max_batch=8, batch_wait_ms=10) as gateway:
        runner = HarnessRunner(task, gateway, recorder, concurrency=3)
        whole = runner.rollout(request)
        recorded = recorder.read_episodes("run-r", 2, "rollout")
        # What a crash after two episodes leaves: those two, with their calls.
        with InMemoryRecorder() as cut:
            kept = sorted(recorded, key=lambda row: row.episode_id)[:2]
            names = {row.episode_id for row in kept}
            cut.append_calls([c for c in recorder.read_calls("run-r", 2) if c.episode_id in names])
            cut.append_episodes(kept)
            served = len(gateway.batch_sizes)
            resumed = HarnessRunner(task, gateway, cut, concurrency=3).rollout(request)
            rows = cut.read_episodes("run-r", 2, "rollout")
            # Only the four missing episodes reached the model.
            assert sum(gateway.batch_sizes[served:]) == 4

    def strip(result):  # the re-run episodes took their own time
        return {k: v for k, v in result.metrics.items() if k != "mean_episode_ms"}

    def outcome(row):
        return (row.episode_id, row.item_id, row.reward, row.status, row.answer, row.n_calls)

    assert (resumed.episodes, resumed.mean_reward) == (whole.episodes, whole.mean_reward)
    assert strip(resumed) == strip(whole)
    assert sorted(map(outcome, rows)) == sorted(map(outcome, recorded))
    assert all(row in rows for row in kept)  # the rows on record stay as they were
    assert all(row.answer is not None for row in rows)


def test_an_episode_gets_the_time_its_task_declares(
    task: tasks.Task, recorder: InMemoryRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(type(task), "episode_timeout_s", 3.0)
    ids = tuple(task.item_ids("train")[:1])
    harness = {
        "agent.py": MIXED_AGENT,
        "harness.json": json.dumps({"modes": {ids[0]: "hang"}}).encode(),
    }
    with Gateway(ScriptedBackend(reply="7", delay_s=0.0)) as gateway:
        HarnessRunner(task, gateway, recorder, concurrency=1).rollout(_rollout(task, harness, ids))
    (row,) = recorder.read_episodes("run-r")
    assert (row.status, row.reason) == ("timeout", "episode exceeded 3s wall clock")
