"""Builds the real components a run config names: task, agents, policy, gateway, runner.

Heavy imports (torch, transformers) happen here, inside the functions, so that read-only
commands start fast.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ledger import Recorder
from sia.config import RunConfig
from sia.ports import Components
from statemachine.errors import ConfigError
from statemachine.state import LEVERS_BY_MODE

__all__ = ["GATEWAY_MAX_BATCH", "Serving", "check_supported", "open_components", "open_serving"]

# Requests decoded together by the gateway: 8 keeps a 135M model's CPU steps efficient.
GATEWAY_MAX_BATCH = 8


def _agents(config: RunConfig, task: Any, recorder: Recorder, runner: Any):
    """The Meta and Feedback agents ``config`` names; Claude ones validate on ``runner``."""
    from sia.agents import RuleFeedbackAgent, TemplateMetaAgent

    meta: Any = TemplateMetaAgent()
    feedback: Any = RuleFeedbackAgent.for_task(task)
    if not config.uses_claude:
        return meta, feedback
    from rl.registry import ALGORITHMS
    from sia.agents.claude import ClaudeClient, ClaudeFeedbackAgent, ClaudeMetaAgent
    from sia.agents.validation import HarnessValidator
    from sia.trajectories import read_trajectories

    client = ClaudeClient(_claude_settings(config))
    train = task.items("train")
    check = HarnessValidator(runner, [item.id for item in train])
    if config.meta_agent == "claude":
        meta = ClaudeMetaAgent(client, check=check)
    if config.feedback_agent == "claude":
        feedback = ClaudeFeedbackAgent(
            client,
            trajectories=lambda run_id, iteration: read_trajectories(
                recorder, run_id, iteration=iteration, purpose="rollout"
            ),
            answers={item.id: item.answer for item in train},
            check=check,
            algorithms={name: cls.summary for name, cls in ALGORITHMS.items()},
        )
    return meta, feedback


def _claude_settings(config: RunConfig):
    from sia.agents.claude import ClaudeSettings

    return ClaudeSettings(
        model=config.agent_model,
        api_key_env=config.agent_api_key_env,
        base_url=config.agent_base_url,
    )


def check_supported(config: RunConfig) -> None:
    """Refuse, before anything is written, a config this installation cannot run."""
    if config.uses_claude and not os.environ.get(config.agent_api_key_env):
        raise ConfigError(
            f"the claude agents need an Anthropic API key in ${config.agent_api_key_env}"
        )
    if config.worker_urls:
        _worker_token(config)
    if config.algorithm is not None:
        from rl.registry import ALGORITHMS

        if config.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"unknown algorithm {config.algorithm!r}; known: {', '.join(sorted(ALGORITHMS))}"
            )
    if config.backend == "vllm":
        from sia.models.vllm_serve import check_installed

        check_installed(config.vllm_config(config.policy))


def _backend(config: RunConfig):
    if config.backend == "openai":
        from sia.models.openai_backend import OpenAIBackendConfig, OpenAIPolicy

        assert config.endpoint is not None  # RunConfig checked it
        return OpenAIPolicy(
            OpenAIBackendConfig(
                base_url=config.endpoint, model=config.policy, api_key_env=config.api_key_env
            )
        )
    if config.backend == "vllm":
        from sia.models import model_path
        from sia.models.vllm_backend import load_tokenizer, open_vllm

        # vLLM serves the directory the trainer loads, so adapters fit the served base.
        directory = model_path(config.policy)
        vllm = config.vllm_config(str(directory))
        return open_vllm(vllm, tokenizer=load_tokenizer(directory))
    from sia.models import load_model
    from sia.models.hf_backend import HFPolicy

    model, tokenizer = load_model(config.policy)
    return HFPolicy(model, tokenizer)


def _remote_workers(config: RunConfig):
    """The remote episode workers ``config`` names, or ``None`` (episodes run here)."""
    if not config.worker_urls:
        return None
    from sia.runner.remote import RemoteEpisodes

    return RemoteEpisodes(config.worker_urls, _worker_token(config))


def _worker_token(config: RunConfig) -> str:
    token = os.environ.get(config.worker_token_env)
    if not token:
        raise ConfigError(
            f"--workers needs the workers' shared token in ${config.worker_token_env}"
        )
    return token


def _trainer(
    config: RunConfig,
    recorder: Recorder,
    gateway: Any,
    progress: Callable[[int, int | None], None] | None = None,
):
    """A LoRA trainer on a fresh copy of the policy's base weights (``hf``, ``vllm``)."""
    if config.backend not in ("hf", "vllm") or "train" not in LEVERS_BY_MODE[config.mode]:
        return None
    from sia.models import load_model, model_path
    from sia.training import LoRATrainer, base_model_digest

    return LoRATrainer(
        recorder,
        lambda: load_model(config.policy),
        base_model=config.policy,
        base_digest=base_model_digest(model_path(config.policy)),
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha,
        run_on_model_thread=gateway.on_model_thread,
        train_processes=config.train_processes,
        shard_base=config.shard_base,
        base_dir=model_path(config.policy),
        device=_train_device(config.train_device),
        progress=progress,
    )


def _train_device(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextmanager
def open_components(
    config: RunConfig,
    recorder: Recorder,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Components]:
    """The components for ``config``, with the model gateway served while the block runs.

    ``progress(done, total)`` hears about finished episodes and training steps (a CLI
    progress bar; a training's ``total`` is None until it has prepared its items).
    """
    from tasks import get_task

    check_supported(config)
    task = get_task(config.task, seed=config.seed)
    with open_serving(config, recorder, task=task, progress=progress) as served:
        meta, feedback = _agents(config, task, recorder, served.runner)
        trainer = _trainer(config, recorder, served.gateway, progress)
        with contextlib.ExitStack() as stack:
            if trainer is not None:
                stack.enter_context(trainer)
            yield Components(
                task=served.task,
                meta=meta,
                feedback=feedback,
                runner=served.runner,
                trainer=trainer,
            )


@dataclass(frozen=True)
class Serving:
    """A run's task and a harness runner in front of its policy, served by a gateway."""

    task: Any
    gateway: Any
    runner: Any


@contextmanager
def open_serving(
    config: RunConfig,
    recorder: Recorder,
    *,
    task: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Serving]:
    """The policy ``config`` names behind a gateway, and a runner recording into ``recorder``.

    Episodes run ``2 * GATEWAY_MAX_BATCH`` at a time, so an episode starting up or scoring
    its answer never leaves a place in the decoding batch empty.
    """
    from sia.gateway import Gateway
    from sia.runner import HarnessRunner
    from tasks import get_task

    if task is None:
        task = get_task(config.task, seed=config.seed)
    remote = _remote_workers(config)
    backend = _backend(config)
    with (
        # A backend with a close (vllm serve's subprocess, HTTP pools) is closed after the run.
        contextlib.closing(backend) if hasattr(backend, "close") else contextlib.nullcontext(),
        contextlib.closing(remote) if remote is not None else contextlib.nullcontext(),
        Gateway(backend, max_batch=GATEWAY_MAX_BATCH, host=config.gateway_host) as gateway,
        HarnessRunner(
            task,
            gateway,
            recorder,
            concurrency=2 * GATEWAY_MAX_BATCH,
            progress=progress,
            remote=remote,
        ) as runner,
    ):
        yield Serving(task=task, gateway=gateway, runner=runner)
