"""Every episode comes back from the ledger file with its token ids and logprobs, and those
logprobs are the model's: re-scoring the recorded tokens gives the same numbers."""

import json

import pytest
from click.testing import CliRunner

import tasks
from sia.cli import cli
from sia.gateway import Gateway
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from sia.ports import RolloutRequest
from sia.runner import HarnessRunner
from sia.trajectories import read_trajectories
from sia.workspace import Workspace


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A sampled rollout of 6 episodes on the tiny model, stored in a real DuckDB ledger."""
    task = tasks.get_task("arith", seed=0)
    model, tokenizer = build_tiny(seed=0)
    policy = HFPolicy(model, tokenizer)
    harness = task.harness_template()
    config = {**json.loads(harness["harness.json"]), "temperature": 0.8, "max_tokens": 8}
    harness["harness.json"] = json.dumps(config).encode()
    ws = Workspace.create(tmp_path_factory.mktemp("ws"))
    ids = tuple(task.item_ids("train")[:6])
    with ws.writer() as rec, Gateway(policy, max_batch=6, batch_wait_ms=10) as gateway:
        HarnessRunner(task, gateway, rec, concurrency=3).rollout(
            RolloutRequest("run-t", 1, "h1", harness, None, None, ids, seed=5)
        )
    return ws, policy, ids


def test_each_episode_reads_back_with_its_calls_tokens_and_logprobs(recorded):
    ws, policy, ids = recorded
    with ws.reader() as rec:
        found = read_trajectories(rec, "run-t", iteration=1, purpose="rollout")
    assert sorted(t.episode.item_id for t in found) == sorted(ids)
    for t in found:
        assert t.episode.status == "ok" and len(t.calls) == t.episode.n_calls == 1
        (call,) = t.calls
        assert call.prompt_ids and call.completion_ids
        assert len(call.completion_ids) == len(call.logprobs)
        assert (
            call.completion_text
            == policy.tokenizer.decode(call.completion_ids, skip_special_tokens=True)
            or call.finish_reason == "stop"
        )
        # Sampled at temperature 0.8 (top_p 1): the recorded logprob is of that distribution.
        rescored = policy.score(call.prompt_ids, call.completion_ids, temperature=0.8)
        assert rescored == pytest.approx(call.logprobs, abs=1e-4)


def test_sia_episodes_lists_and_shows_one_episode(recorded):
    ws, _, _ = recorded
    listed = CliRunner().invoke(cli, ["--workspace", str(ws.root), "episodes", "run-t", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.stdout)
    assert len(data) == 6 and all(len(e["calls"]) == 1 for e in data)
    one = data[0]["episode_id"]
    shown = CliRunner().invoke(
        cli, ["--workspace", str(ws.root), "episodes", "run-t", "--episode", one]
    )
    assert shown.exit_code == 0 and one in shown.output and "completion id:logprob" in shown.output
    missing = CliRunner().invoke(
        cli, ["--workspace", str(ws.root), "episodes", "run-t", "--episode", "nope"]
    )
    assert missing.exit_code == 1 and "no episode 'nope'" in missing.output
    assert "Traceback" not in missing.output
