"""What every algorithm is: a validated frozen config and an object turning samples into a loss.

An algorithm does two things, both called by the trainer (``rl.train``), which owns the
optimiser, the step loop and saving:

``prepare(policy, samples)``
    once, before the first step: pick the usable samples or pairs, compute what stays
    fixed during training (advantages, reference logprobs, old values) and return the
    training *items*; raise :class:`RLError` if there is no learning signal.
``loss(policy, items)``
    per micro-batch: a scalar loss with grad, and a few float statistics.

Configs and this module import no torch, so a caller can validate a configuration (e.g.
one named in a Decision) without loading the tensor libraries.
"""

from __future__ import annotations

import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from rl.errors import RLConfigError, RLError

if TYPE_CHECKING:
    import torch

    from rl.batch import TokenBatch
    from rl.data import Sample
    from rl.policy import Policy

__all__ = ["Algorithm", "AlgorithmConfig", "ScoredSample", "sequence_batch", "setting"]


def setting(
    default: Any,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A config field with its help text and the bounds ``__post_init__`` enforces."""
    bounds = {k: v for k, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    return field(default=default, metadata={"help": help, **bounds})


_BOUND_CHECKS = {
    "gt": (lambda v, b: v > b, ">"),
    "ge": (lambda v, b: v >= b, ">="),
    "lt": (lambda v, b: v < b, "<"),
    "le": (lambda v, b: v <= b, "<="),
}


@dataclass(frozen=True)
class AlgorithmConfig:
    """Settings every algorithm has. Subclasses redeclare fields to change defaults.

    One optimiser *step* sees ``minibatch_size`` items (samples, or pairs for DPO), fed
    through the model ``micro_batch_size`` at a time to bound memory; one *epoch* is one
    pass over all items, so training runs ``epochs * ceil(items / minibatch_size)`` steps.
    """

    algorithm: ClassVar[str] = "base"

    learning_rate: float = setting(2e-4, "AdamW learning rate for the LoRA weights", gt=0, le=1)
    epochs: int = setting(2, "passes over the prepared items", ge=1, le=1000)
    minibatch_size: int = setting(16, "items per optimiser step", ge=1)
    micro_batch_size: int = setting(
        8, "at most this many items per forward pass; gradients accumulate over a step", ge=1
    )
    max_grad_norm: float = setting(1.0, "gradient-norm clip; 0 turns clipping off", ge=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0, lt=1)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in fields(self):
            value = _checked_type(
                self.algorithm, spec.name, hints[spec.name], getattr(self, spec.name)
            )
            object.__setattr__(self, spec.name, value)
            for key, (ok, symbol) in _BOUND_CHECKS.items():
                bound = spec.metadata.get(key)
                if bound is not None and not ok(value, bound):
                    raise RLConfigError(
                        f"{self.algorithm}.{spec.name} must be {symbol} {bound}, got {value!r}"
                    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name → help text, for documentation and agents choosing settings."""
        return {spec.name: spec.metadata["help"] for spec in fields(cls)}


def _checked_type(algorithm: str, name: str, kind: Any, value: Any) -> Any:
    where = f"{algorithm}.{name}"
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise RLConfigError(
                f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}"
            )
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise RLConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RLConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if kind is float:
        # JSON and YAML write 1e-4 as a float but 1 as an int; both mean the number.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RLConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise RLConfigError(f"{where} must be finite, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise RLConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported config field type {kind!r}")


@dataclass
class ScoredSample:
    """A sample with what ``prepare`` computed for it.

    ``advantage`` is the per-sequence advantage (0 where unused); ``tokens`` holds 1-D
    per-completion-token tensors by name (e.g. ``ref_logprobs``, ``advantages``,
    ``returns``, ``old_values``), placed back into batches with ``TokenBatch.place``.
    """

    sample: Sample
    advantage: float = 0.0
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)


def sequence_batch(
    policy: Policy, items: Sequence[ScoredSample]
) -> tuple[TokenBatch, torch.Tensor, torch.Tensor]:
    """``items`` as one batch, its current logprobs (B, W) and sequence advantages (B,)."""
    import torch

    batch = policy.batch([item.sample for item in items])
    logprobs, _ = policy.logprobs(batch)  # (B, W)
    advantages = torch.tensor([i.advantage for i in items], device=logprobs.device)  # (B,)
    return batch, logprobs, advantages


ItemT = TypeVar("ItemT")
ConfigT = TypeVar("ConfigT", bound=AlgorithmConfig)


class Algorithm(ABC, Generic[ConfigT, ItemT]):
    """Base class of the registered algorithms (see the module docstring for the protocol)."""

    name: ClassVar[str]
    #: When the Feedback Agent should choose it: reward shape and failure mode it fits.
    summary: ClassVar[str]
    Config: ClassVar[type[AlgorithmConfig]]

    def __init__(self, config: ConfigT) -> None:
        self.config = config
        #: Trainable modules besides the LoRA, saved as ``<name>.safetensors``.
        self.heads: dict[str, torch.nn.Module] = {}
        #: Facts about the prepared data (counts of usable groups, pairs...) for metrics.
        self.info: dict[str, Any] = {}

    def init_heads(self, policy: Policy, init_adapter: Path | None) -> None:
        """Create ``self.heads`` (loading them from ``init_adapter`` if saved there)."""

    @abstractmethod
    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[ItemT]:
        """The training items; raise RLError when the samples carry no learning signal."""

    @abstractmethod
    def loss(self, policy: Policy, items: Sequence[ItemT]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss with grad over one micro-batch of items, and float statistics."""

    @abstractmethod
    def trained_tokens(self, item: ItemT) -> int:
        """How many tokens of ``item`` the loss trains on (for throughput metrics)."""

    def no_signal(self, why: str) -> RLError:
        """The error for samples this algorithm cannot learn from."""
        return RLError(f"{self.name}: no usable training data: {why}")
