"""Builds the real components a run config names: task, agents, policy, gateway, runner.

Heavy imports (torch, transformers) happen here, inside the functions, so that read-only
commands start fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ledger import Recorder
from sia.config import RunConfig
from sia.ports import Components
from statemachine.errors import ConfigError

__all__ = ["check_supported", "open_components"]


def _agents(config: RunConfig, task):
    from sia.agents import RuleFeedbackAgent, TemplateMetaAgent

    if config.meta_agent != "offline":
        raise ConfigError(f"unknown meta agent {config.meta_agent!r} (available: offline)")
    if config.feedback_agent != "offline":
        raise ConfigError(f"unknown feedback agent {config.feedback_agent!r} (available: offline)")
    return TemplateMetaAgent(), RuleFeedbackAgent.for_task(task)


def check_supported(config: RunConfig) -> None:
    """Refuse, before anything is written, a config this installation cannot run."""
    if config.mode != "h":
        raise ConfigError(
            f"mode {config.mode} trains LoRA adapters, and no RL trainer is installed yet; "
            "use --mode h"
        )


def _backend(config: RunConfig):
    if config.backend == "openai":
        from sia.models.openai_backend import OpenAIBackendConfig, OpenAIPolicy

        assert config.endpoint is not None  # RunConfig checked it
        return OpenAIPolicy(
            OpenAIBackendConfig(
                base_url=config.endpoint, model=config.policy, api_key_env=config.api_key_env
            )
        )
    from sia.models import load_model
    from sia.models.hf_backend import HFPolicy

    model, tokenizer = load_model(config.policy)
    return HFPolicy(model, tokenizer)


@contextmanager
def open_components(
    config: RunConfig,
    recorder: Recorder,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Components]:
    """The components for ``config``, with the model gateway served while the block runs.

    ``progress(done, total)`` hears about finished episodes (a CLI progress bar).
    """
    from sia.gateway import Gateway
    from sia.runner import HarnessRunner
    from tasks import get_task

    check_supported(config)
    task = get_task(config.task, seed=config.seed)
    meta, feedback = _agents(config, task)
    with Gateway(_backend(config)) as gateway:
        runner = HarnessRunner(task, gateway, recorder, progress=progress)
        yield Components(task=task, meta=meta, feedback=feedback, runner=runner, trainer=None)
