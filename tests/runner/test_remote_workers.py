"""Remote rollout workers: episodes run by workers, model calls relayed to the one gateway."""

import base64
import socket
from collections.abc import Iterator

import httpx2
import pytest

import tasks
from ledger import InMemoryRecorder
from sia.gateway import Gateway
from sia.ports import RolloutRequest
from sia.runner import HarnessRunner
from sia.runner.remote import EpisodeWorker, RemoteEpisodes
from tests.gateway.fakes import ScriptedBackend

TOKEN = "worker-secret"


@pytest.fixture(scope="module")
def task() -> tasks.Task:
    return tasks.get_task("arith", seed=0)


@pytest.fixture(scope="module")
def workers() -> Iterator[tuple[EpisodeWorker, EpisodeWorker]]:
    with EpisodeWorker(TOKEN) as first, EpisodeWorker(TOKEN) as second:
        yield first, second


@pytest.fixture
def recorder() -> Iterator[InMemoryRecorder]:
    with InMemoryRecorder() as ledger:
        yield ledger


def _rollout(task: tasks.Task, n: int) -> RolloutRequest:
    return RolloutRequest(
        run_id="run-remote",
        iteration=1,
        harness_commit="h1",
        harness=task.harness_template(),
        adapter_tag=None,
        adapter_path=None,
        item_ids=tuple(task.item_ids("train")[:n]),
        seed=3,
    )


def _down_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_rollout_runs_on_both_workers_and_is_recorded(
    task: tasks.Task, workers: tuple[EpisodeWorker, EpisodeWorker], recorder: InMemoryRecorder
) -> None:
    before = [worker.episodes_served for worker in workers]
    remote = RemoteEpisodes([worker.url for worker in workers], TOKEN)
    with Gateway(ScriptedBackend(reply="42")) as gateway:
        runner = HarnessRunner(task, gateway, recorder, concurrency=2, remote=remote)
        result = runner.rollout(_rollout(task, 4))
    remote.close()

    assert result.episodes == 4 and result.failures == 0
    episodes = recorder.read_episodes("run-remote", 1, "rollout")
    assert len(episodes) == 4
    assert all(e.status == "ok" and e.answer == "42" and e.n_calls == 1 for e in episodes)
    calls = recorder.read_calls("run-remote", 1)
    assert sorted(c.episode_id for c in calls) == sorted(e.episode_id for e in episodes)
    assert all(c.harness_commit == "h1" for c in calls)
    assert [w.episodes_served - b for w, b in zip(workers, before, strict=True)] == [2, 2]


def test_a_wrong_worker_token_is_refused(
    task: tasks.Task, workers: tuple[EpisodeWorker, EpisodeWorker], recorder: InMemoryRecorder
) -> None:
    reply = httpx2.post(f"{workers[0].url}/episodes", json={}, headers={"Authorization": "x"})
    assert reply.status_code == 401

    remote = RemoteEpisodes([workers[0].url], "not-the-token")
    with Gateway(ScriptedBackend()) as gateway:
        result = HarnessRunner(task, gateway, recorder, remote=remote).rollout(_rollout(task, 1))
    remote.close()
    assert result.failures == 1
    (row,) = recorder.read_episodes("run-remote")
    assert row.status == "error" and "\n" not in row.reason
    assert row.reason.startswith(f"worker {workers[0].url} answered 401")


def test_a_down_worker_fails_its_episodes_and_the_rollout_finishes(
    task: tasks.Task, workers: tuple[EpisodeWorker, EpisodeWorker], recorder: InMemoryRecorder
) -> None:
    down = _down_url()
    remote = RemoteEpisodes([workers[0].url, down], TOKEN)
    with Gateway(ScriptedBackend()) as gateway:
        runner = HarnessRunner(task, gateway, recorder, concurrency=2, remote=remote)
        result = runner.rollout(_rollout(task, 4))
    remote.close()

    assert result.episodes == 4 and result.failures == 2
    rows = recorder.read_episodes("run-remote")
    failed = [row for row in rows if row.status != "ok"]
    assert len(failed) == 2
    for row in failed:
        assert row.status == "error" and "\n" not in row.reason
        assert row.reason.startswith(f"worker {down} unreachable")
    assert all(row.answer == "42" for row in rows if row.status == "ok")


def test_harness_paths_may_not_leave_the_harness_folder(
    workers: tuple[EpisodeWorker, EpisodeWorker],
) -> None:
    code = base64.b64encode(b"def solve(client, item, config):\n    return ''\n").decode()
    job = {"item": {}, "config": {}, "base_url": "http://127.0.0.1:9/v1", "token": "t"}
    for name in ("../escape.py", "/tmp/escape.py"):
        body = {
            "harness": {"agent.py": code, name: code},
            "job": job,
            "limits": {"timeout_s": 5, "memory_mb": 512},
        }
        reply = httpx2.post(
            f"{workers[0].url}/episodes", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert reply.status_code == 400
        assert "escapes the harness folder" in reply.json()["error"]["message"]


def test_the_relay_refuses_unknown_episode_tokens(
    workers: tuple[EpisodeWorker, EpisodeWorker],
) -> None:
    reply = httpx2.post(
        f"{workers[0].url}/relay/v1/chat/completions",
        json={"model": "policy", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer sia-unknown"},
    )
    assert reply.status_code == 401


def test_a_worker_on_another_address_relays_on_loopback_only(
    task: tasks.Task, recorder: InMemoryRecorder
) -> None:
    # 127.0.0.2 stands in for a LAN address: the relay gets a 127.0.0.1 socket of its own.
    with EpisodeWorker(TOKEN, host="127.0.0.2", fork_server=False) as worker:
        assert worker.url.startswith("http://127.0.0.2:")
        refused = httpx2.post(
            f"{worker.url}/relay/v1/chat/completions",
            json={},
            headers={"Authorization": "Bearer sia-unknown"},
        )
        remote = RemoteEpisodes([worker.url], TOKEN)
        with Gateway(ScriptedBackend()) as gateway:
            result = HarnessRunner(task, gateway, recorder, remote=remote).rollout(
                _rollout(task, 1)
            )
        remote.close()
    assert refused.status_code == 403
    assert result.failures == 0
    assert len(recorder.read_calls("run-remote", 1)) == 1
