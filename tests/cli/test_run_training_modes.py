"""`sia run --mode w` and `w+h` end to end on a tiny local model: rollouts in groups, a
LoRA adapter trained on the recorded calls, tagged, stored, then served for evaluation."""

import json

import pytest
from click.testing import CliRunner

from harness_repo.errors import ArtifactCorrupt
from sia.cli import cli
from sia.models import load_model
from sia.models.hf_backend import HFPolicy
from sia.workspace import Workspace
from tests.support.any_number import registered


@pytest.fixture(autouse=True)
def any_number_task():
    with registered():
        yield


def _run(ws, tiny_model_dir, mode, *extra, task="any-number"):
    args = ["--workspace", str(ws), "run", "--mode", mode, "--policy", str(tiny_model_dir)]
    args += ["--task", task]
    args += ["--iterations", "1", "--batch-size", "2", "--run-id", mode, "--json", *extra]
    return CliRunner().invoke(cli, args)


def test_an_unknown_forced_algorithm_is_refused_before_anything_is_written(
    tmp_path, tiny_model_dir
):
    out = _run(tmp_path / "ws", tiny_model_dir, "w", "--algorithm", "sgd-magic")
    assert out.exit_code == 1 and "unknown algorithm 'sgd-magic'" in out.output
    assert (
        not (tmp_path / "ws").exists() or not Workspace.open(tmp_path / "ws").ledger_path.exists()
    )


def test_a_sharded_base_on_one_process_is_refused_before_anything_is_written(
    tmp_path, tiny_model_dir
):
    out = _run(tmp_path / "ws", tiny_model_dir, "w", "--shard-base")
    assert out.exit_code == 1 and "shard_base needs train_processes ≥ 2" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert (
        not (tmp_path / "ws").exists() or not Workspace.open(tmp_path / "ws").ledger_path.exists()
    )


@pytest.mark.slow
def test_mode_w_trains_tags_and_serves_an_adapter(tmp_path, tiny_model_dir, monkeypatch):
    from sia.cli.live import RunView

    shown: list[tuple[int, int | None]] = []
    original = RunView.episodes
    monkeypatch.setattr(
        RunView,
        "episodes",
        lambda view, done, total: (shown.append((done, total)), original(view, done, total)),
    )
    ws = tmp_path / "ws"
    out = _run(ws, tiny_model_dir, "w", "--algorithm", "bon_bc")
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["status"] == "done"
    replay = json.loads(CliRunner().invoke(cli, ["-w", str(ws), "replay", "w", "--json"]).stdout)
    assert replay["problems"] == []
    trained = replay["iterations"][1]
    assert trained["lever"] == "train" and trained["algorithm"] == "bon_bc"
    workspace = Workspace.open(ws)
    with workspace.reader() as rec:
        rollout = [c for c in rec.read_calls("w", 1) if c.episode_id.startswith("rollout")]
        evals = [c for c in rec.read_calls("w", 1) if c.episode_id.startswith("eval-val")]
    # Two items, four episodes each, sampled at the forced temperature.
    assert len({c.episode_id for c in rollout}) == 8 and {c.temperature for c in rollout} == {1.0}
    assert trained["abandoned"] is None
    tag = trained["adapter_tag"]
    manifest = workspace.repo().adapter_manifest(tag)
    assert manifest["algorithm"] == "bon_bc" and manifest["config"]["lora"]["rank"] == 8
    assert workspace.artifacts().exists(manifest["sha256"])
    # The progress bar followed the training's steps against their announced total.
    steps = manifest["metrics"]["steps"]
    assert [(s, t) for s, t in shown if t == steps][-steps:] == [
        (i, steps) for i in range(1, steps + 1)
    ]
    # The candidate was evaluated with its adapter applied to every call.
    assert evals and {c.adapter_tag for c in evals} == {tag}
    _reloaded_adapter_reproduces_its_eval(workspace, tiny_model_dir, tag, evals)
    _reevaluation_reproduces_the_recorded_scores(ws, replay)
    _corrupted_adapter_is_refused(ws, workspace, manifest["sha256"])


def _reevaluation_reproduces_the_recorded_scores(ws, replay):
    out = CliRunner().invoke(cli, ["-w", str(ws), "evaluate", "w", "--split", "val", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["candidates"]
    recorded = {it["iteration"]: it["val_score"] for it in replay["iterations"]}
    assert [row["iteration"] for row in rows] == sorted(recorded)
    for row in rows:
        # Greedy evaluation of the same harness and adapter on the same items: same score.
        assert row["score"] == row["recorded_val"] == recorded[row["iteration"]]
    assert rows[1]["adapter_tag"] == replay["iterations"][1]["adapter_tag"]
    missing = CliRunner().invoke(cli, ["-w", str(ws), "evaluate", "w", "--iterations", "7"])
    assert missing.exit_code == 1
    assert "evaluated no candidate at iteration(s) 7 (evaluated: 0, 1)" in missing.output


def _reloaded_adapter_reproduces_its_eval(workspace, tiny_model_dir, tag, evals):
    """The adapter, loaded from the store by its tag, re-scores the eval's tokens exactly."""
    model, tokenizer = load_model(tiny_model_dir)
    policy = HFPolicy(model, tokenizer)
    manifest = workspace.repo().adapter_manifest(tag)
    policy.load_adapter(tag, workspace.artifacts().path(manifest["sha256"]))
    policy.set_adapter(tag)
    scored = [c for c in evals if c.completion_ids]
    assert scored
    for call in scored:
        again = policy.score(call.prompt_ids, call.completion_ids, temperature=call.temperature)
        assert again == pytest.approx(list(call.logprobs), abs=1e-4)
    # Without the adapter the same tokens score differently: the check has teeth.
    policy.set_adapter(None)
    bare = [policy.score(c.prompt_ids, c.completion_ids, temperature=c.temperature) for c in scored]
    pairs = zip(bare, scored, strict=True)
    assert any(b != pytest.approx(list(c.logprobs), abs=1e-4) for b, c in pairs)


def _corrupted_adapter_is_refused(ws, workspace, digest):
    folder = workspace.artifacts().path(digest)
    weights = folder / "adapter_model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupt, match=r"adapter_model\.safetensors changed"):
        workspace.artifacts().path(digest)
    out = CliRunner().invoke(cli, ["-w", str(ws), "verify", "w"])
    assert out.exit_code == 1
    assert f"sha256:{digest}" in out.output and "adapter_model.safetensors changed" in out.output
    out = CliRunner().invoke(cli, ["-w", str(ws), "evaluate", "w"])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "is corrupt: adapter_model.safetensors changed" in out.output


@pytest.mark.slow
def test_a_train_without_signal_is_abandoned_and_the_run_finishes(tmp_path, tiny_model_dir):
    """On real arith the untrained tiny model never scores: nothing to learn from."""
    ws = tmp_path / "ws"
    out = _run(ws, tiny_model_dir, "w", "--algorithm", "grpo", task="arith")
    assert out.exit_code == 0, out.output
    replay = json.loads(CliRunner().invoke(cli, ["-w", str(ws), "replay", "w", "--json"]).stdout)
    it = replay["iterations"][1]
    assert it["lever"] == "train" and it["accepted"] is False and it["val_score"] is None
    assert it["abandoned"].startswith("grpo")
    assert replay["status"] == "done" and replay["problems"] == []


@pytest.mark.slow
def test_training_on_two_processes_stores_the_single_process_adapter(tmp_path, tiny_model_dir):
    """--train-processes 2: torchrun workers load the base from disk, rank 0 writes the
    adapter, and the tagged adapter holds the same weights as one process would train;
    with --shard-base the workers hold half the base each and still train the same."""
    from safetensors.torch import load_file

    weights = {}
    for name, flags in {
        "one": ["--train-processes", "1"],
        "two": ["--train-processes", "2"],
        "sharded": ["--train-processes", "2", "--shard-base"],
    }.items():
        ws = tmp_path / name
        out = _run(ws, tiny_model_dir, "w", "--algorithm", "bon_bc", *flags)
        assert out.exit_code == 0, out.output
        workspace = Workspace.open(ws)
        manifest = workspace.repo().adapter_manifest("lora/w/1")
        assert manifest["metrics"]["world_size"] == int(flags[1])
        assert manifest["metrics"]["sharded_base"] == (name == "sharded")
        folder = workspace.artifacts().path(manifest["sha256"])
        weights[name] = load_file(str(folder / "adapter_model.safetensors"))
    assert weights["one"] and weights["one"].keys() == weights["two"].keys()
    assert weights["one"].keys() == weights["sharded"].keys()
    for other in ("two", "sharded"):
        for tensor_name, tensor in weights["one"].items():
            diff = (tensor - weights[other][tensor_name]).abs().max().item()
            assert diff <= 1e-6, (other, tensor_name)


def test_a_run_id_git_cannot_name_is_refused_before_anything_is_written(tmp_path, tiny_model_dir):
    out = _run(tmp_path / "ws", tiny_model_dir, "h", "--run-id", "w+h")
    assert out.exit_code == 1 and "run id 'w+h' must be letters" in out.output
    assert len(out.output.strip().splitlines()) == 1
    ws = Workspace.open(tmp_path / "ws") if (tmp_path / "ws").exists() else None
    if ws is not None and ws.ledger_path.exists():
        with ws.reader() as rec:
            assert rec.heads() == []
