"""The settings of the ``vllm`` policy backend: how to reach vLLM and how to size it.

Kept apart from the backends so that a run config can be checked (and ``sia run --help``
rendered) without importing anything heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from statemachine.errors import ConfigError

__all__ = ["LORA_RANKS", "VLLMConfig", "VLLMMode", "lora_rank_slot"]

VLLMMode = Literal["attach", "serve", "in_process"]

#: The ``--max-lora-rank`` values vLLM accepts: its LoRA kernels are compiled for these.
LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds adapters of ``rank``."""
    for slot in LORA_RANKS:
        if slot >= rank:
            return slot
    raise ConfigError(f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}")


@dataclass(frozen=True)
class VLLMConfig:
    """Where vLLM runs and how it is sized. Help text lives in ``metadata["help"]``.

    Exactly one way of reaching vLLM is chosen: ``endpoints`` (attach to servers already
    running), ``serve`` (start ``vllm serve`` here and stop it on close) or ``in_process``
    (a ``vllm.LLM`` engine inside this process).
    """

    model: str = field(
        metadata={"help": "base model vLLM loads: a model directory (the one LoRA training uses)"}
    )
    endpoints: tuple[str, ...] = field(
        default=(),
        metadata={"help": "API roots with /v1 of running vLLM servers (replicas, round-robin)"},
    )
    serve: bool = field(default=False, metadata={"help": "start `vllm serve` and stop it on close"})
    in_process: bool = field(default=False, metadata={"help": "run a vllm.LLM engine in process"})
    served_model_name: str | None = field(
        default=None,
        metadata={
            "help": "name requests use for the base model; default: model (serve, in process) "
            "or the one base model the endpoints list (attach)"
        },
    )
    host: str = field(default="127.0.0.1", metadata={"help": "interface `vllm serve` binds"})
    port: int = field(default=0, metadata={"help": "port `vllm serve` binds; 0: a free one"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model replica"})
    data_parallel_size: int = field(
        default=1, metadata={"help": "model replicas inside the served vLLM (serve only)"}
    )
    max_loras: int = field(default=4, metadata={"help": "adapters one vLLM batch may mix"})
    max_lora_rank: int = field(
        default=16, metadata={"help": f"largest adapter rank vLLM accepts, one of {LORA_RANKS}"}
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "fraction of each GPU's memory vLLM may take"}
    )
    serve_args: tuple[str, ...] = field(
        default=(), metadata={"help": "extra `vllm serve` arguments (--max-model-len 4096, …)"}
    )
    startup_timeout_s: float = field(
        default=900.0, metadata={"help": "seconds `vllm serve` may take to become healthy"}
    )
    timeout_s: float = field(default=600.0, metadata={"help": "seconds per HTTP call"})
    max_retries: int = field(default=3, metadata={"help": "retries after 429, 5xx, no connection"})
    backoff_s: float = field(default=0.5, metadata={"help": "first retry delay, doubling"})
    max_concurrency: int = field(default=64, metadata={"help": "HTTP calls in flight at once"})
    api_key_env: str = field(
        default="VLLM_API_KEY",
        metadata={"help": "environment variable with the servers' --api-key; unset: none"},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "serve_args", tuple(self.serve_args))
        ways = [bool(self.endpoints), self.serve, self.in_process]
        checks = [
            (bool(self.model), "model must not be empty"),
            (
                sum(ways) == 1,
                "choose exactly one of endpoints (attach), serve and in_process",
            ),
            (
                all(e.startswith(("http://", "https://")) for e in self.endpoints),
                "endpoints must be http(s) URLs",
            ),
            (len(set(self.endpoints)) == len(self.endpoints), "endpoints must not repeat"),
            (self.served_model_name is None or bool(self.served_model_name), "empty name"),
            (0 <= self.port < 65536, "port must be in [0, 65535]"),
            (self.tensor_parallel_size >= 1, "tensor_parallel_size must be >= 1"),
            (self.data_parallel_size >= 1, "data_parallel_size must be >= 1"),
            (
                self.data_parallel_size == 1 or self.serve,
                "data_parallel_size > 1 needs serve (attached replicas are the endpoints)",
            ),
            (self.max_loras >= 1, "max_loras must be >= 1"),
            (self.max_lora_rank in LORA_RANKS, f"max_lora_rank must be one of {LORA_RANKS}"),
            (
                0 < self.gpu_memory_utilization <= 1,
                "gpu_memory_utilization must be in (0, 1]",
            ),
            (_positive(self.startup_timeout_s), "startup_timeout_s must be > 0"),
            (_positive(self.timeout_s), "timeout_s must be > 0"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (math.isfinite(self.backoff_s) and self.backoff_s >= 0, "backoff_s must be >= 0"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (bool(self.api_key_env), "api_key_env must name an environment variable"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"VLLMConfig: {message}")

    @property
    def mode(self) -> VLLMMode:
        if self.serve:
            return "serve"
        return "in_process" if self.in_process else "attach"


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0
