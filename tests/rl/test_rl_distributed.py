"""Data-parallel training: two gloo ranks through the real launcher equal one process.

The launcher tests start ``torchrun`` with two CPU workers (each imports torch,
transformers and peft: ~10 s of wall time on a loaded two-core machine per launch).
"""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rl.data import Sample
from rl.distributed import World
from rl.errors import RLConfigError, RLError
from rl.job import PROGRESS_FILE, RESULT_FILE, TrainJob, read_job, write_job
from rl.launch import train_distributed
from rl.train import train_lora
from tests.rl.rl_support import sample

# Four micro-batches per step, so each of two ranks runs two of them.
CONFIG = {"epochs": 1, "learning_rate": 1e-2, "minibatch_size": 16, "micro_batch_size": 4}


@pytest.fixture(scope="module")
def base_dir(pretrained, tmp_path_factory):
    """The pre-trained tiny model saved as a model directory, as workers load it."""
    model, tokenizer = pretrained
    directory = tmp_path_factory.mktemp("base")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load_base(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(directory)


def tensors(directory):
    """Every tensor the adapter directory holds (LoRA weights and heads), by file and name."""
    return {
        f"{path.name}:{name}": value
        for path in sorted(directory.glob("*.safetensors"))
        for name, value in load_file(str(path)).items()
    }


@pytest.mark.parametrize("algorithm", ["grpo", "ppo_gae"])
def test_two_ranks_train_the_single_process_adapter(algorithm, base_dir, tmp_path):
    model, tokenizer = load_base(base_dir)
    samples = sample(model, seed=1, group_size=4)
    planned: list[int] = []
    single = train_lora(
        model,
        tokenizer,
        samples,
        algorithm,
        config=CONFIG,
        seed=3,
        out_dir=tmp_path / "one",
        on_start=planned.append,
    )
    assert planned == [single.metrics["steps"]]
    steps: list[int] = []
    result = train_distributed(
        tmp_path / "job",
        2,
        samples=samples,
        algorithm=algorithm,
        base_model=base_dir,
        config=CONFIG,
        seed=3,
        threads=1,
        on_step=steps.append,
        on_start=planned.append,
    )

    assert result.path == tmp_path / "job" / "adapter"
    expected, got = tensors(tmp_path / "one"), tensors(result.path)
    assert set(got) == set(expected)
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    print(f"{algorithm}: max |DDP - single| = {worst:.3g}")
    assert worst <= 1e-5
    assert any(float(v.abs().max()) > 0 for k, v in got.items() if "lora_B" in k)  # trained

    assert steps == list(range(1, single.metrics["steps"] + 1))
    assert planned == [single.metrics["steps"]] * 2  # announced once, before the steps
    # Only rank 0 reports: one progress line per step, not one per rank.
    assert (tmp_path / "job" / PROGRESS_FILE).read_text().split() == [str(s) for s in steps]
    assert not list((tmp_path / "job").glob("error-*.json"))
    assert result.metrics["world_size"] == 2
    for key in ("loss", "grad_norm"):
        assert result.metrics[key] == pytest.approx(single.metrics[key], rel=1e-6, abs=1e-7)
    assert result.metrics["tokens_trained"] == single.metrics["tokens_trained"]
    assert result.config == single.config and result.lora == single.lora
    record = json.loads((result.path / "sia_training.json").read_text())
    assert record["metrics"]["world_size"] == 2 and record["seed"] == 3


@pytest.mark.parametrize("algorithm", ["grpo", "ppo_gae"])
def test_a_sharded_base_trains_the_single_process_adapter(algorithm, base_dir, tmp_path):
    """FSDP2 over two gloo ranks: each keeps half the base, the adapter is the same.

    Three micro-batches per step, so rank 0 runs one and pads with a discarded pass while
    rank 1 runs two: the shards' collectives must stay in step.
    """
    config = CONFIG | {"micro_batch_size": 6}
    model, tokenizer = load_base(base_dir)
    samples = sample(model, seed=1, group_size=4)
    single = train_lora(
        model, tokenizer, samples, algorithm, config=config, seed=3, out_dir=tmp_path / "one"
    )
    result = train_distributed(
        tmp_path / "job",
        2,
        samples=samples,
        algorithm=algorithm,
        base_model=base_dir,
        config=config,
        seed=3,
        threads=1,
        shard_base=True,
    )

    expected, got = tensors(tmp_path / "one"), tensors(result.path)
    assert set(got) == set(expected)
    worst = max(float((got[k] - expected[k]).abs().max()) for k in expected)
    print(f"{algorithm} sharded: max |FSDP - single| = {worst:.3g}")
    assert worst == 0.0
    assert result.metrics["loss"] == pytest.approx(single.metrics["loss"], rel=1e-6, abs=1e-7)
    assert result.metrics["sharded_base"] and not single.metrics["sharded_base"]
    whole, per_rank = single.metrics["base_mb_per_rank"], result.metrics["base_mb_per_rank"]
    print(f"base resident per rank: {per_rank:.3f} MB sharded vs {whole:.3f} MB whole")
    assert per_rank < 0.6 * whole


def test_a_sharded_base_continues_an_adapter_like_one_process(base_dir, tmp_path):
    """Ranks other than 0 load the adapter onto a meta skeleton; rank 0's values win."""
    model, tokenizer = load_base(base_dir)
    samples = sample(model, seed=1, group_size=4)
    first = train_lora(model, tokenizer, samples, "grpo", config=CONFIG, out_dir=tmp_path / "a")
    model, tokenizer = load_base(base_dir)
    again = dict(config=CONFIG, seed=4, init_adapter=first.path)
    train_lora(model, tokenizer, samples, "grpo", out_dir=tmp_path / "one", **again)
    result = train_distributed(
        tmp_path / "job", 2, samples=samples, algorithm="grpo", base_model=base_dir,
        threads=1, shard_base=True, **again,
    )  # fmt: skip
    expected, got = tensors(tmp_path / "one"), tensors(result.path)
    assert set(got) == set(expected)
    assert max(float((got[k] - expected[k]).abs().max()) for k in expected) == 0.0


def test_sharding_needs_several_ranks(pretrained, base_dir, tmp_path):
    import copy

    model, tokenizer = pretrained
    samples = sample(model, seed=1, group_size=2)
    with pytest.raises(RLConfigError, match="at least 2 processes"):
        train_distributed(
            tmp_path, 1, samples=samples, algorithm="grpo", base_model=base_dir, shard_base=True
        )
    with pytest.raises(RLConfigError, match="several training processes"):
        train_lora(
            copy.deepcopy(model), tokenizer, samples, "grpo", out_dir=tmp_path, shard_base=True
        )


def test_worker_failure_is_a_one_line_rl_error(base_dir, tmp_path):
    model, _ = load_base(base_dir)
    # Every group scored alike: the workers find no signal (what the orchestrator reads as
    # "no candidate", so it must stay an RLError and not become a config error).
    flat = [
        Sample(s.prompt_ids, s.completion_ids, s.logprobs, 0.5, s.group, s.temperature)
        for s in sample(model, seed=1, group_size=2)
    ]
    with pytest.raises(RLError) as caught:
        train_distributed(
            tmp_path / "job", 2, samples=flat, algorithm="grpo", base_model=base_dir, threads=1
        )
    assert type(caught.value) is RLError
    message = str(caught.value)
    assert message.startswith("grpo: no usable training data") and "\n" not in message
    assert not (tmp_path / "job" / RESULT_FILE).exists()
    assert not (tmp_path / "job" / "adapter").exists()


def test_bad_settings_fail_before_any_process_starts(base_dir, tmp_path):
    samples = [Sample((1, 2), (3,), (-0.5,), 1.0, "g")]
    with pytest.raises(RLConfigError, match=r"grpo\.clip_eps must be < 1"):
        train_distributed(
            tmp_path, 2, samples=samples, algorithm="grpo", base_model=base_dir,
            config={"clip_eps": 5},
        )  # fmt: skip
    with pytest.raises(RLConfigError, match="unknown RL algorithm"):
        train_distributed(tmp_path, 2, samples=samples, algorithm="nope", base_model=base_dir)
    with pytest.raises(RLConfigError, match="processes"):
        train_distributed(tmp_path, 0, samples=samples, algorithm="grpo", base_model=base_dir)
    assert not (tmp_path / "job.json").exists()


def test_worker_keeps_a_config_error_a_config_error(base_dir, tmp_path):
    """A job the worker refuses (written by hand, bypassing the launcher's checks)."""
    from rl.job import read_error
    from rl.worker import main

    samples = [Sample((1, 2), (3,), (-0.5,), 1.0, "g")]
    job = TrainJob(
        algorithm="grpo", config={"clip_eps": 5.0}, base_model=base_dir, out_dir=tmp_path / "a"
    )
    write_job(tmp_path, job, samples)
    assert main(["--job", str(tmp_path)]) == 1
    error = read_error(tmp_path)
    assert isinstance(error, RLConfigError) and "clip_eps must be < 1" in str(error)
    assert not (tmp_path / "a").exists()


class OneRankOfTwo(World):
    """Rank 1 of a pretend world of two: the peer is this rank's mirror image.

    ``gather`` answers with ``peer`` for rank 0 (or this rank's own value), so the other
    rank's failures can be staged without a process group.
    """

    def __init__(self, peer=None):
        super().__init__(rank=1, size=2)
        object.__setattr__(self, "peer", peer)

    def gather(self, value):
        return [self.peer(value) if self.peer else value, value]

    def accumulate_gradients(self, params, local, n_chunks):
        for j, p in enumerate(params):
            grads = [g[j] for g in local if g[j] is not None]
            p.grad = sum(grads[1:], grads[0].clone()) if grads else None


def test_rank_one_trains_its_share_and_writes_nothing(pretrained, tmp_path):
    import copy

    model, tokenizer = pretrained
    samples = sample(model, seed=1, group_size=4)
    result = train_lora(
        copy.deepcopy(model),
        tokenizer,
        samples,
        "grpo",
        config=CONFIG,
        out_dir=tmp_path / "out",
        world=OneRankOfTwo(),
    )
    assert result.metrics["steps"] >= 1 and result.metrics["world_size"] == 2
    assert not (tmp_path / "out").exists()


def test_a_peer_rank_failure_stops_every_rank(pretrained, tmp_path):
    import copy

    model, tokenizer = pretrained
    samples = sample(model, seed=1, group_size=4)
    peer = OneRankOfTwo(peer=lambda value: ([], "grpo: loss became nan at step 1 (peer)"))
    with pytest.raises(RLError, match=r"loss became nan at step 1 \(peer\)"):
        train_lora(
            copy.deepcopy(model),
            tokenizer,
            samples,
            "grpo",
            config=CONFIG,
            out_dir=tmp_path / "out",
            world=peer,
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("n_chunks", "size"), [(4, 2), (5, 2), (1, 2), (4, 3), (2, 4)])
def test_rank_blocks_partition_the_micro_batches_in_order(n_chunks, size):
    blocks = [World(rank, size).chunks(n_chunks) for rank in range(size)]
    assert [i for block in blocks for i in block] == list(range(n_chunks))
    assert max(map(len, blocks)) == math.ceil(n_chunks / size)
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    # A sharded base makes every rank run as many passes as the largest block.
    assert {World(rank, size, sharded=True).passes(n_chunks) for rank in range(size)} == {
        max(map(len, blocks))
    }
    assert [World(rank, size).passes(n_chunks) for rank in range(size)] == list(map(len, blocks))


def test_job_directory_round_trips_samples_exactly(tmp_path):
    samples = [
        Sample((1, 2), (3, 4), (-0.1234567890123, -1e-9), 0.25, "a", 0.7, (True, False)),
        Sample((5,), (6,), (0.0,), -1.0, "b", 0.0),
    ]
    job = TrainJob(
        algorithm="dpo",
        config={"beta": 0.2},
        base_model=tmp_path / "base",
        out_dir=tmp_path / "out",
        init_adapter=tmp_path / "init",
        seed=7,
        threads=2,
    )
    write_job(tmp_path / "job", job, samples)
    assert read_job(tmp_path / "job") == (job, samples)
    (tmp_path / "job" / "job.json").write_text('{"format": "other"}')
    with pytest.raises(RLError, match="not a sia-train-job/1 job"):
        read_job(tmp_path / "job")


def test_a_raising_on_step_stops_the_workers(base_dir, tmp_path):
    import subprocess

    model, _ = load_base(base_dir)
    samples = sample(model, seed=1, group_size=4)

    class Cancelled(Exception):
        pass

    def cancel(step):
        raise Cancelled(f"stop after step {step}")

    long = {**CONFIG, "epochs": 100, "learning_rate": 1e-4}
    with pytest.raises(Cancelled, match="stop after step 1"):
        train_distributed(
            tmp_path / "job",
            2,
            samples=samples,
            algorithm="grpo",
            base_model=base_dir,
            config=long,
            threads=1,
            on_step=cancel,
        )
    assert not (tmp_path / "job" / RESULT_FILE).exists()
    running = subprocess.run(["pgrep", "-f", str(tmp_path / "job")], capture_output=True)
    assert running.stdout == b""  # torchrun and both workers are gone


def test_launcher_failure_line(tmp_path):
    from rl.launch import STDERR_FILE, _last_stderr_line

    report = (
        "Setting OMP_NUM_THREADS environment variable for each process to be 1\n"
        "{worker}"
        "E1205 08:28:12 11109 torch/distributed/elastic/multiprocessing/api.py:1002] "
        "failed (exitcode: -9) local_rank: 0 (pid: 11114) of binary: python\n"
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        "  traceback : To enable traceback see: https://pytorch.org\n"
        "=====================\n"
    )
    (tmp_path / STDERR_FILE).write_text(report.format(worker="MemoryError: out of memory\n"))
    assert _last_stderr_line(tmp_path) == "MemoryError: out of memory"
    (tmp_path / STDERR_FILE).write_text(report.format(worker=""))
    assert _last_stderr_line(tmp_path).startswith("failed (exitcode: -9) local_rank: 0")
