"""Run configuration: one validated dataclass, stored whole in the run's first event."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from statemachine.errors import ConfigError
from statemachine.planner import Budget
from statemachine.state import LEVERS_BY_MODE

if TYPE_CHECKING:
    from sia.models.vllm_config import VLLMConfig

__all__ = ["AGENTS", "BACKENDS", "RunConfig"]

#: Policy backends a run can name.
BACKENDS: tuple[str, ...] = ("hf", "openai", "vllm")
#: Meta and Feedback agent implementations a run can name.
AGENTS: tuple[str, ...] = ("offline", "claude")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run. Help text lives in ``metadata["help"]``."""

    task: str = field(default="arith", metadata={"help": "task id, see `sia tasks`"})
    mode: str = field(default="h", metadata={"help": "h: edits only, w: training only, w+h: both"})
    seed: int = field(default=0, metadata={"help": "seeds batches, sampling and training"})
    budget: Budget = field(default_factory=Budget, metadata={"help": "when the run stops"})
    batch_size: int = field(default=16, metadata={"help": "train items per rollout"})
    group_size: int | None = field(
        default=None,
        metadata={
            "help": "episodes per item in a rollout (groups give GRPO its baseline and DPO its "
            "pairs); default 1 in mode h, 4 when training is possible"
        },
    )
    rollout_temperature: float | None = field(
        default=None,
        metadata={
            "help": "temperature forced on rollout calls so that groups differ; default: the "
            "harness's own in mode h, 1.0 when training is possible"
        },
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank of trained adapters"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / rank)"})
    train_processes: int = field(
        default=1,
        metadata={
            "help": "data-parallel training processes (torchrun workers loading the base from "
            "its directory; only rank 0 writes the adapter); 1 trains in the run's process"
        },
    )
    shard_base: bool = field(
        default=False,
        metadata={
            "help": "shard the frozen base among the training processes (FSDP2) instead of "
            "giving each a whole copy; for bases one device cannot hold"
        },
    )
    workers: str | None = field(
        default=None,
        metadata={
            "help": "remote episode workers (`sia worker`), their URLs comma-separated; "
            "episodes run there, their model calls relayed to this run's gateway"
        },
    )
    gateway_host: str = field(
        default="127.0.0.1",
        metadata={"help": "address the gateway binds; one the workers can reach"},
    )
    worker_token_env: str = field(
        default="SIA_WORKER_TOKEN",
        metadata={"help": "environment variable with the workers' shared token (never stored)"},
    )
    train_device: str = field(
        default="auto",
        metadata={"help": "where adapters train: cpu, cuda, or auto (cuda when present)"},
    )
    policy: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "policy model: a registered name or a model directory (hf), or the "
            "model name the endpoint serves (openai)"
        },
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "hf: transformers in process; openai: an OpenAI-compatible endpoint "
            "(harness only, mode h); vllm: vLLM rollouts with live LoRA, training with hf"
        },
    )
    endpoint: str | None = field(
        default=None,
        metadata={
            "help": "API root with its /v1 (openai); for vllm, running servers' roots, "
            "comma-separated (replicas); vllm without it or vllm_serve runs in process"
        },
    )
    api_key_env: str | None = field(
        default=None,
        metadata={
            "help": "environment variable holding the endpoint's API key (never stored); "
            "default OPENAI_API_KEY, VLLM_API_KEY for vllm"
        },
    )
    vllm_serve: bool = field(
        default=False, metadata={"help": "vllm: start `vllm serve` for the run, stop it after"}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per replica"})
    data_parallel_size: int = field(
        default=1, metadata={"help": "vllm: replicas inside the served vLLM (vllm_serve)"}
    )
    max_loras: int = field(default=4, metadata={"help": "vllm: adapters one batch may mix"})
    max_lora_rank: int | None = field(
        default=None,
        metadata={"help": "vllm: largest adapter rank; default the smallest slot >= lora_rank"},
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata={"help": "vllm: fraction of each GPU's memory vLLM takes"}
    )
    meta_agent: str = field(
        default="offline",
        metadata={"help": "agent writing the initial harness: offline (the template) or claude"},
    )
    feedback_agent: str = field(
        default="offline",
        metadata={"help": "agent choosing edit or train: offline (named rules) or claude"},
    )
    agent_model: str = field(
        default="claude-sonnet-5-5", metadata={"help": "model of the claude agents"}
    )
    agent_api_key_env: str = field(
        default="ANTHROPIC_API_KEY",
        metadata={"help": "environment variable holding the agents' API key (never stored)"},
    )
    agent_base_url: str | None = field(
        default=None, metadata={"help": "API root for the claude agents; default: Anthropic's"}
    )
    algorithm: str | None = field(default=None, metadata={"help": "force one RL algorithm"})

    def __post_init__(self) -> None:
        if self.mode not in LEVERS_BY_MODE:
            raise ConfigError(f"mode must be one of {sorted(LEVERS_BY_MODE)}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if isinstance(self.train_processes, bool) or self.train_processes < 1:
            raise ConfigError(f"train_processes must be ≥ 1, got {self.train_processes}")
        if self.shard_base and self.train_processes < 2:
            raise ConfigError("shard_base needs train_processes ≥ 2")
        if self.workers is not None and not self.worker_urls:
            raise ConfigError("workers names no URL; pass --workers http://HOST:PORT[,…]")
        if self.train_device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train_device must be auto, cpu or cuda, got {self.train_device!r}")
        trains = "train" in LEVERS_BY_MODE[self.mode]
        # Resolved here, so the stored config says what the run actually did.
        if self.group_size is None:
            object.__setattr__(self, "group_size", 4 if trains else 1)
        if self.rollout_temperature is None and trains:
            object.__setattr__(self, "rollout_temperature", 1.0)
        if self.group_size < 1:
            raise ConfigError(f"group_size must be ≥ 1, got {self.group_size}")
        if self.rollout_temperature is not None and not 0 <= self.rollout_temperature <= 5:
            raise ConfigError(
                f"rollout_temperature must be in [0, 5], got {self.rollout_temperature}"
            )
        if self.lora_rank < 1 or self.lora_alpha < 1:
            raise ConfigError("lora_rank and lora_alpha must be ≥ 1")
        if not isinstance(self.budget, Budget):
            raise ConfigError("budget must be a Budget")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai":
            if not self.endpoint:
                raise ConfigError("the openai backend needs --endpoint (an API root with /v1)")
            if self.mode != "h":
                raise ConfigError(
                    f"mode {self.mode} trains adapters; the openai backend serves a fixed "
                    "remote model, so it runs mode h only"
                )
        elif self.backend == "vllm":
            from sia.models.vllm_config import lora_rank_slot

            if self.max_lora_rank is None:
                object.__setattr__(self, "max_lora_rank", lora_rank_slot(self.lora_rank))
            if self.max_lora_rank < self.lora_rank:
                raise ConfigError(
                    f"max_lora_rank {self.max_lora_rank} < lora_rank {self.lora_rank}"
                )
            self.vllm_config("policy")  # checks the vllm settings now, before anything runs
        elif self.endpoint is not None:
            raise ConfigError(f"--endpoint is for the openai or vllm backend, not {self.backend}")
        if self.vllm_serve and self.backend != "vllm":
            raise ConfigError(f"--vllm-serve is for the vllm backend, not {self.backend}")
        if self.api_key_env is None:
            key = "VLLM_API_KEY" if self.backend == "vllm" else "OPENAI_API_KEY"
            object.__setattr__(self, "api_key_env", key)
        for role in ("meta_agent", "feedback_agent"):
            if getattr(self, role) not in AGENTS:
                raise ConfigError(
                    f"{role} must be one of {', '.join(AGENTS)}, got {getattr(self, role)!r}"
                )

    def vllm_config(self, model: str) -> VLLMConfig:
        """The vllm backend's settings for this run, serving ``model`` (a directory)."""
        from sia.models.vllm_config import VLLMConfig

        endpoints = tuple(e.strip() for e in (self.endpoint or "").split(",") if e.strip())
        return VLLMConfig(
            model=model,
            endpoints=endpoints,
            serve=self.vllm_serve,
            in_process=not endpoints and not self.vllm_serve,
            tensor_parallel_size=self.tensor_parallel_size,
            data_parallel_size=self.data_parallel_size,
            max_loras=self.max_loras,
            max_lora_rank=self.max_lora_rank or 16,
            gpu_memory_utilization=self.gpu_memory_utilization,
            api_key_env=self.api_key_env or "VLLM_API_KEY",
        )

    @property
    def worker_urls(self) -> tuple[str, ...]:
        """The remote episode workers' URLs; empty: episodes run on this machine."""
        return tuple(url.strip() for url in (self.workers or "").split(",") if url.strip())

    @property
    def uses_claude(self) -> bool:
        return "claude" in (self.meta_agent, self.feedback_agent)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RunConfig:
        """The config ``data`` describes (a stored run's, an experiment's options).

        Every mistake is one :class:`ConfigError` line that starts with ``source`` and names
        the field: an unknown key, a value of the wrong type, or one out of range.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: not a mapping of settings ({type(data).__name__})")
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown config keys: {', '.join(unknown)}")
        data = dict(data)
        for name, value in data.items():
            if name != "budget":
                _check_type(source, name, str(known[name]), value)
        budget = data.get("budget")
        if budget is not None and not isinstance(budget, Budget):
            if not isinstance(budget, dict):
                raise ConfigError(f"{source}: budget must be a mapping, got {budget!r}")
            fields = {f.name: str(f.type) for f in dataclasses.fields(Budget)}
            for name, value in budget.items():
                if name not in fields:
                    raise ConfigError(f"{source}: unknown budget key {name!r}")
                _check_type(source, f"budget.{name}", fields[name], value)
        try:
            if isinstance(budget, dict):
                data["budget"] = Budget.from_config(data)
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


#: The annotations a stored config's scalar fields carry, and the JSON types that fit them.
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
}


def _check_type(source: str, name: str, annotation: str, value: Any) -> None:
    """Refuse ``value`` unless it fits ``annotation`` (``int``, ``float | None``, …).

    A stored config comes from JSON written by some SIA, or by hand; a string where a number
    belongs would otherwise surface later as a ``TypeError`` deep in the loop.
    """
    accepted: list[type] = []
    for part in annotation.split("|"):
        types = _SCALARS.get(part.strip())
        if types is None:
            return  # not a scalar (Budget): checked where it is built
        accepted.extend(types)
    # bool is an int to Python but not to a user who wrote "batch_size": true.
    if isinstance(value, bool) and bool not in accepted:
        ok = False
    else:
        ok = isinstance(value, tuple(accepted))
    if not ok:
        raise ConfigError(f"{source}: {name} must be {annotation}, got {value!r}")
