"""LoRA adapters: settings, attaching to a base model, and the adapter directory format.

An adapter directory is peft's own format (``adapter_config.json`` +
``adapter_model.safetensors``, loadable by transformers/peft and by vLLM's LoRA loader),
plus files those loaders ignore: one ``<name>.safetensors`` per extra trained head (PPO's
``value_head.safetensors``) and ``sia_training.json``, the full training record.

peft is imported on first use: it takes seconds to import, and the settings class is
needed by callers that only validate a configuration.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rl.errors import RLConfigError, RLError

if TYPE_CHECKING:
    import torch
    from peft import PeftModel

__all__ = [
    "LLAMA_TARGETS",
    "TRAINING_RECORD",
    "LoraSettings",
    "attach_lora",
    "load_head",
    "lora_settings_of",
    "save_adapter",
]

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
TRAINING_RECORD = "sia_training.json"


@dataclass(frozen=True)
class LoraSettings:
    """Shape of a new LoRA adapter. Defaults suit Llama-style models (SmolLM2 included)."""

    rank: int = field(default=8, metadata={"help": "LoRA rank r: width of the low-rank update"})
    alpha: int = field(
        default=16, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank"}
    )
    dropout: float = field(
        default=0.0, metadata={"help": "dropout on the LoRA input; 0 keeps training exact"}
    )
    target_modules: tuple[str, ...] = field(
        default=LLAMA_TARGETS,
        metadata={"help": "names of the linear modules that get an adapter"},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in ("rank", "alpha"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RLConfigError(f"LoraSettings.{name} must be a positive int, got {value!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise RLConfigError(f"LoraSettings.dropout must be a number, got {dropout!r}")
        if not (math.isfinite(dropout) and 0.0 <= dropout < 1.0):
            raise RLConfigError(f"LoraSettings.dropout must be in [0, 1), got {dropout!r}")
        if not self.target_modules or not all(
            isinstance(m, str) and m for m in self.target_modules
        ):
            raise RLConfigError("LoraSettings.target_modules must be non-empty module names")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data


def attach_lora(
    model: torch.nn.Module, settings: LoraSettings, init_adapter: Path | None = None
) -> PeftModel:
    """Wrap ``model`` with a trainable LoRA: a new one from ``settings``, or ``init_adapter``.

    peft injects the adapter layers into ``model`` itself; the base weights are frozen and
    untouched. When continuing from ``init_adapter`` its saved configuration wins over
    ``settings`` (see :func:`lora_settings_of`).
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        directory = Path(init_adapter)
        if not (directory / "adapter_config.json").is_file():
            raise RLError(f"{directory} is not a peft adapter (no adapter_config.json)")
        try:
            with _quiet_peft():
                return PeftModel.from_pretrained(model, str(directory), is_trainable=True)
        # peft and safetensors raise unrelated types for a broken directory.
        except Exception as error:
            raise RLError(f"cannot load adapter {directory}: {error}".splitlines()[0]) from error
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        task_type="CAUSAL_LM",
    )
    try:
        with _quiet_peft():
            return get_peft_model(model, config)
    except ValueError as error:  # peft's "Target modules ... not found in the base model"
        raise RLConfigError(f"cannot attach LoRA: {error}".splitlines()[0]) from error


@contextmanager
def _quiet_peft() -> Iterator[None]:
    # peft 0.21 calls a transformers method that transformers 5 deprecates; the warning is
    # theirs to fix and says nothing to our user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def lora_settings_of(model: PeftModel) -> LoraSettings:
    """The settings of the active adapter of ``model`` (what was actually trained)."""
    config = model.peft_config[model.active_adapter]
    targets = config.target_modules
    return LoraSettings(
        rank=int(config.r),
        alpha=int(config.lora_alpha),
        dropout=float(config.lora_dropout),
        target_modules=tuple(sorted(targets)) if not isinstance(targets, str) else (targets,),
    )


def save_adapter(
    model: PeftModel, out_dir: Path, heads: dict[str, torch.nn.Module] | None = None
) -> None:
    """Write the adapter in peft format, plus each head as ``<name>.safetensors``."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    for name, head in (heads or {}).items():
        tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(tensors, str(out_dir / f"{name}.safetensors"))


def load_head(directory: Path | None, name: str, head: torch.nn.Module) -> bool:
    """Load ``<name>.safetensors`` from an adapter directory into ``head`` if it is there.

    Returns whether it was loaded. A head of another shape (an adapter trained on another
    model) is an error, not a silent fresh start.
    """
    if directory is None or not (Path(directory) / f"{name}.safetensors").is_file():
        return False
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / f"{name}.safetensors"))
    try:
        head.load_state_dict(state)
    except RuntimeError as error:
        raise RLError(f"{directory}/{name}.safetensors does not fit this model") from error
    return True
