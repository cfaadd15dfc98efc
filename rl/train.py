"""``train_lora``: fit a LoRA adapter to recorded rollouts with one registered algorithm.

The trainer only orchestrates: attach the adapter, let the algorithm prepare its items,
run a fixed number of AdamW steps (``epochs`` passes, ``minibatch_size`` items per step,
gradients accumulated over ``micro_batch_size`` chunks), save. Everything random — LoRA
init, shuffling, dropout — draws from torch's RNG seeded with ``seed`` inside a forked RNG
state, so the same call on CPU gives the same adapter bit for bit and the caller's global
RNG is left as it was.

Launched on several processes (``torch.distributed`` initialised, e.g. by
``rl.launch.train_distributed``), the same call trains data-parallel: ranks share each
step's micro-batches and take exactly the single-process step (see ``rl.distributed``).

``train_lora`` is the whole job; its pieces (``minibatches``, ``train_step``...) are public
for benchmarks and custom loops.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rl.algorithms.base import Algorithm, AlgorithmConfig
from rl.data import Sample, mean_reward
from rl.distributed import World, current_world, take_gradients
from rl.errors import RLConfigError, RLError
from rl.lora import TRAINING_RECORD, LoraSettings, attach_lora, lora_settings_of, save_adapter
from rl.policy import Policy
from rl.registry import algorithm_config, get_algorithm
from rl.sharding import base_bytes, shard_frozen_base

__all__ = [
    "StepResult",
    "TrainResult",
    "make_optimizer",
    "minibatches",
    "train_lora",
    "train_mode",
    "train_step",
    "trainable_parameters",
]

RECORD_FORMAT = "sia-training/1"
# Rank r of a data-parallel run draws LoRA dropout from seed + stride * r.
_RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class TrainResult:
    """Where the adapter went and what made it; every field is JSON-ready except ``path``.

    ``metrics`` keys: ``loss`` and ``grad_norm`` (one float per step), ``stats`` (name →
    one float per step; per algorithm, e.g. ``clip_fraction``, ``approx_kl``, ``kl_ref``,
    ``value_loss``, ``reward_accuracy``, ``nll``), ``steps``, ``epochs``, ``samples``,
    ``items`` (samples or pairs actually trained), ``mean_reward`` and ``reward_std`` (of
    all samples given), ``data`` (the algorithm's facts about its items, e.g.
    ``groups_used``, ``pairs``), ``tokens_trained`` (trained tokens summed over steps),
    ``tokens_per_second`` (over the step loop), ``prepare_seconds``, ``train_seconds``,
    ``seconds`` (the whole call), ``peak_rss_mb`` (the process's peak so far),
    ``world_size``, ``sharded_base`` and ``base_mb_per_rank`` (frozen base weights resident
    on the largest rank: the whole base unless sharded).
    """

    path: Path
    algorithm: str
    config: dict[str, Any]
    lora: dict[str, Any]
    metrics: dict[str, Any]


def train_lora(
    model: torch.nn.Module,
    tokenizer: Any,
    samples: Sequence[Sample],
    algorithm: str,
    *,
    config: Mapping | AlgorithmConfig | None = None,
    lora: LoraSettings = LoraSettings(),  # noqa: B008 — frozen, so sharing is safe
    seed: int = 0,
    init_adapter: Path | None = None,
    out_dir: Path,
    device: str = "cpu",
    on_step: Callable[[int], None] | None = None,
    world: World | None = None,
    shard_base: bool = False,
    on_start: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a LoRA on ``samples`` with ``algorithm`` and save it to ``out_dir``.

    ``model`` is a plain transformers causal LM and is modified in place: peft injects
    the adapter layers into it, and they stay there, trained, after the call (the base
    weights themselves stay bit-identical). Pass a copy you can throw away. ``tokenizer``
    supplies the pad id only. ``init_adapter`` continues training an existing adapter
    directory (its own LoRA settings win over ``lora``; a saved value head is reused).

    ``on_step(n)`` is called after optimiser step ``n``; an exception it raises stops
    training there (a caller's cancellation) and propagates. ``on_start(total)`` is called
    once, when the items are prepared, with the number of steps to come (for an ETA).

    Data parallel: when ``torch.distributed`` is initialised with several processes (or a
    ``world`` is given), every rank must make this same call; each step's micro-batches are
    shared among the ranks and gradients summed so the update is the single-process one
    (see :mod:`rl.distributed`). Only rank 0 writes ``out_dir``; the other ranks return
    the same result (metrics are summed over ranks) with nothing written at its ``path``.
    ``shard_base`` also shards the frozen base among the ranks (FSDP2, see
    :mod:`rl.sharding`): only rank 0's ``model`` needs real weights (the others may be on
    ``meta``), and it is left sharded, usable only inside the group.

    Raises RLConfigError for a bad algorithm/config, RLError when the samples hold no
    learning signal for the algorithm or training diverges.
    """
    started = time.perf_counter()
    algorithm_class = get_algorithm(algorithm)
    resolved = _resolve_config(algorithm_class, algorithm, config)
    samples = list(samples)
    if not samples:
        raise RLError(f"{algorithm}: no samples to train on")
    if not all(isinstance(s, Sample) for s in samples):
        raise RLError(f"{algorithm}: samples must be rl.data.Sample instances")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RLConfigError(f"seed must be a non-negative int, got {seed!r}")
    out_dir = Path(out_dir)
    world = world if world is not None else current_world()
    if shard_base:
        if world is None:
            raise RLConfigError("shard_base needs several training processes")
        world = replace(world, sharded=True)
    target = torch.device(device)
    rng_devices = [target.index or 0] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        peft_model = attach_lora(model, lora, Path(init_adapter) if init_adapter else None)
        if world is not None and world.sharded:
            adapter = [p for p in peft_model.parameters() if p.requires_grad]
            shard_frozen_base(peft_model, adapter, device)  # rank 0's values, on the device
        else:
            peft_model.to(target)
        resident = base_bytes(peft_model)
        policy = Policy(peft_model, _pad_id(tokenizer), target, resolved.micro_batch_size)
        algo = algorithm_class(resolved)
        algo.init_heads(policy, Path(init_adapter) if init_adapter else None)
        peft_model.eval()  # fixed quantities are computed without dropout
        items = algo.prepare(policy, samples)
        prepared = time.perf_counter()
        if world is not None:
            # Independent LoRA-dropout masks per rank; init and prepare above drew the same.
            torch.manual_seed(seed + _RANK_SEED_STRIDE * world.rank)
        if on_start is not None:
            on_start(resolved.epochs * math.ceil(len(items) / resolved.minibatch_size))
        metrics = _fit(algo, policy, items, resolved, seed, on_step, world)
        train_seconds = time.perf_counter() - prepared
    peft_model.eval()
    # peft keeps target modules as a set: report the caller's order when they were given.
    settings = lora_settings_of(peft_model) if init_adapter else lora
    writes = world is None or world.is_main
    if writes:
        save_adapter(peft_model, out_dir, algo.heads)
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
    metrics |= {
        "samples": len(samples),
        "items": len(items),
        "mean_reward": mean_reward(samples),
        "reward_std": float(rewards.std(unbiased=False)),
        "data": algo.info,
        "prepare_seconds": prepared - started,
        "train_seconds": train_seconds,
        "tokens_per_second": metrics["tokens_trained"] / max(train_seconds, 1e-9),
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": _peak_rss_mb(),
    }
    metrics["world_size"] = 1 if world is None else world.size
    metrics["sharded_base"] = world is not None and world.sharded
    metrics["base_mb_per_rank"] = resident / 2**20
    if world is not None:
        # Every rank prepares all items and takes every step: the slowest and largest count.
        metrics["peak_rss_mb"] = max(world.gather(metrics["peak_rss_mb"]))
        metrics["base_mb_per_rank"] = max(world.gather(metrics["base_mb_per_rank"]))
    result = TrainResult(
        path=out_dir,
        algorithm=algorithm,
        config=resolved.to_dict(),
        lora=settings.to_dict(),
        metrics=metrics,
    )
    if writes:
        _write_record(
            result, model=peft_model, seed=seed, init_adapter=init_adapter, heads=algo.heads
        )
    return result


def _fit(
    algo: Algorithm,
    policy: Policy,
    items: list,
    config: AlgorithmConfig,
    seed: int,
    on_step: Callable[[int], None] | None = None,
    world: World | None = None,
) -> dict[str, Any]:
    """The step loop; returns per-step metrics."""
    params = trainable_parameters(algo, policy)
    optimizer = make_optimizer(params, config)
    losses: list[float] = []
    grad_norms: list[float] = []
    stats: dict[str, list[float]] = {}
    tokens = 0
    if world is not None and world.is_main:
        _warn_if_ranks_idle(world, min(config.minibatch_size, len(items)), config)
    train_mode(policy)
    for indices in minibatches(len(items), config, seed):
        minibatch = [items[i] for i in indices]
        step = train_step(
            algo, policy, optimizer, params, minibatch, config, len(losses) + 1, world
        )
        losses.append(step.loss)
        grad_norms.append(step.grad_norm)
        tokens += step.tokens
        for key, value in step.stats.items():
            stats.setdefault(key, []).append(value)
        if on_step is not None:
            on_step(len(losses))
    return {
        "loss": losses,
        "grad_norm": grad_norms,
        "stats": stats,
        "steps": len(losses),
        "epochs": config.epochs,
        "tokens_trained": tokens,
    }


def _warn_if_ranks_idle(world: World, minibatch: int, config: AlgorithmConfig) -> None:
    """Ranks share a step by micro-batches; fewer micro-batches than ranks leaves some idle."""
    chunks = math.ceil(minibatch / config.micro_batch_size)
    if chunks < world.size:
        warnings.warn(
            f"{world.size} ranks share {chunks} micro-batch(es) per step, so "
            f"{world.size - chunks} idle: set micro_batch_size <= "
            f"{max(1, minibatch // world.size)} to use them all",
            stacklevel=3,
        )


@dataclass(frozen=True)
class StepResult:
    """One optimiser step: its loss, the algorithm's statistics, the pre-clip gradient
    norm, and how many tokens it trained on."""

    loss: float
    stats: dict[str, float]
    grad_norm: float
    tokens: int


def trainable_parameters(algo: Algorithm, policy: Policy) -> list[torch.nn.Parameter]:
    """The LoRA weights and the algorithm's heads: everything the optimiser may change."""
    params = [p for p in policy.model.parameters() if p.requires_grad]
    return params + [p for head in algo.heads.values() for p in head.parameters()]


def make_optimizer(
    params: Sequence[torch.nn.Parameter], config: AlgorithmConfig
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def minibatches(n_items: int, config: AlgorithmConfig, seed: int) -> Iterator[list[int]]:
    """Item indices of each step: ``epochs`` shuffled passes cut into minibatches."""
    order_rng = torch.Generator().manual_seed(seed)
    for _ in range(config.epochs):
        order = torch.randperm(n_items, generator=order_rng).tolist()
        for start in range(0, n_items, config.minibatch_size):
            yield order[start : start + config.minibatch_size]


def train_step(
    algo: Algorithm,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    minibatch: Sequence[Any],
    config: AlgorithmConfig,
    step: int = 1,
    world: World | None = None,
) -> StepResult:
    """One optimiser step over ``minibatch``, accumulated over micro-batches.

    Each micro-batch's loss is weighted by its share of the minibatch's items, so the
    gradient is the minibatch mean whatever ``micro_batch_size`` is (exactly so for
    per-item means; token means are averaged per micro-batch first).

    With a ``world`` (data parallel, see :mod:`rl.distributed`) this rank runs only its
    block of the same micro-batches, with the same shares; the gradients and statistics of
    all micro-batches are then summed in micro-batch order on every rank, so every rank
    takes exactly the single-process step.
    """
    optimizer.zero_grad(set_to_none=True)
    parts: list[_Part] = []
    local_grads: list[list[torch.Tensor | None]] = []
    failure: str | None = None
    offsets = range(0, len(minibatch), config.micro_batch_size)
    n_chunks = len(offsets)
    passes = len(offsets)
    if world is not None:
        mine = world.chunks(n_chunks)
        offsets = offsets[mine.start : mine.stop]
        passes = world.passes(n_chunks)
    for index in range(passes):
        if index >= len(offsets) or failure is not None:
            _padding_pass(algo, policy, params, minibatch[: config.micro_batch_size])
            continue
        chunk = minibatch[offsets[index] : offsets[index] + config.micro_batch_size]
        share = len(chunk) / len(minibatch)
        loss, chunk_stats = algo.loss(policy, chunk)
        value = loss.item()
        if not math.isfinite(value):
            failure = (
                f"{algo.name}: loss became {value} at step {step} "
                f"(learning rate {config.learning_rate} too high?)"
            )
            if world is None:
                raise RLError(failure)
            if not world.sharded:
                break  # the other ranks must hear of it before anyone raises
            _discard_backward(loss, params)
            continue
        (loss * share).backward()
        if world is not None:
            local_grads.append(take_gradients(params))
        parts.append(
            (
                value * share,
                {key: stat * share for key, stat in chunk_stats.items()},
                sum(algo.trained_tokens(item) for item in chunk),
            )
        )
    if world is not None:
        reports = world.gather((parts, failure))
        failures = [failed for _, failed in reports if failed is not None]
        if failures:  # every rank raises the same error, none waits for the others
            raise RLError(failures[0])
        parts = [part for rank_parts, _ in reports for part in rank_parts]
        world.accumulate_gradients(params, local_grads, n_chunks)
    total, stats, tokens = _sum_parts(parts)
    norm = torch.nn.utils.clip_grad_norm_(
        params, config.max_grad_norm if config.max_grad_norm > 0 else math.inf
    )
    optimizer.step()
    return StepResult(loss=total, stats=stats, grad_norm=float(norm), tokens=tokens)


def _padding_pass(
    algo: Algorithm, policy: Policy, params: Sequence[torch.nn.Parameter], chunk: Sequence[Any]
) -> None:
    """A forward and backward pass that only keeps a sharded base's collectives in step."""
    loss, _ = algo.loss(policy, chunk)
    _discard_backward(loss, params)


def _discard_backward(loss: torch.Tensor, params: Sequence[torch.nn.Parameter]) -> None:
    (loss * 0.0).backward()
    take_gradients(params)  # thrown away


# One micro-batch's contribution to a step: loss * share, stats * share, trained tokens.
_Part = tuple[float, dict[str, float], int]


def _sum_parts(parts: Sequence[_Part]) -> tuple[float, dict[str, float], int]:
    """A step's loss, statistics and tokens: the micro-batches' parts summed in order."""
    total = 0.0
    stats: dict[str, float] = {}
    tokens = 0
    for value, chunk_stats, chunk_tokens in parts:
        total += value
        for key, stat in chunk_stats.items():
            stats[key] = stats.get(key, 0.0) + stat
        tokens += chunk_tokens
    return total, stats, tokens


def train_mode(policy: Policy) -> None:
    """Put the policy in training mode: LoRA dropout on, base-model dropout off."""
    # Base-model dropout (GPT-2 style models have it) would make the policy stochastic, so
    # the first step's ratio against the sampler would not be 1 and the ratio would carry
    # noise; only the dropout the LoRA settings ask for is switched on.
    policy.model.eval()
    for name, module in policy.model.named_modules():
        if "lora_dropout" in name:
            module.train()


def _resolve_config(
    algorithm_class: type[Algorithm], name: str, config: Mapping | AlgorithmConfig | None
) -> AlgorithmConfig:
    if config is None or isinstance(config, Mapping):
        return algorithm_config(name, config)
    if type(config) is not algorithm_class.Config:
        raise RLConfigError(
            f"config is a {type(config).__name__}, but {name} takes a "
            f"{algorithm_class.Config.__name__}"
        )
    return config


def _pad_id(tokenizer: Any) -> int:
    # Padding sits after every real token and is masked out, so any valid id will do.
    for attribute in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if isinstance(value, int):
            return value
    return 0


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _write_record(
    result: TrainResult,
    *,
    model: torch.nn.Module,
    seed: int,
    init_adapter: Path | None,
    heads: Mapping[str, torch.nn.Module],
) -> None:
    """``sia_training.json``: everything needed to know how the adapter was made."""
    import peft
    import transformers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    record = {
        "format": RECORD_FORMAT,
        "algorithm": result.algorithm,
        "config": result.config,
        "lora": result.lora,
        "seed": seed,
        "init_adapter": str(init_adapter) if init_adapter else None,
        "base_model": getattr(base.config, "_name_or_path", None) or None,
        "heads": {name: f"{name}.safetensors" for name in heads},
        "metrics": result.metrics,
        "versions": {
            "torch": torch.__version__,
            "peft": peft.__version__,
            "transformers": transformers.__version__,
        },
    }
    path = result.path / TRAINING_RECORD
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
