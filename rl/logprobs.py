"""Per-token log-probabilities of completion tokens, from logits or from a model.

``selective_log_softmax`` is TRL's (``trl.trainer.utils``) when trl is installed: on GPUs
it has a fused Triton kernel. trl is not a dependency of this project, though — it would
pull in ``datasets`` and ``pandas`` for one function — so without it the same computation
runs here: gather the chosen logit and subtract the row's logsumexp, one row at a time, so
no second (B, T, V) tensor (a full log-softmax) is ever materialised.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Callable

import torch

from rl.batch import TokenBatch

__all__ = ["model_logprobs", "selective_log_softmax", "token_logprobs"]


def _local_selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    chosen = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)  # (...)
    if logits.dtype in (torch.float32, torch.float64):
        # Row by row: logsumexp's temporaries stay (T, V), not (B, T, V).
        norm = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])  # (...)
        return chosen - norm
    # logsumexp loses too much in bfloat16/float16; log_softmax per row is exact enough.
    return torch.stack(
        [
            row.log_softmax(-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
            for row, idx in zip(logits, index, strict=True)
        ]
    )


@functools.cache
def _implementation() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if importlib.util.find_spec("trl") is not None:
        try:
            from trl.trainer.utils import selective_log_softmax as trl_version
        # An installed trl that fails to import (version skew) must not stop training.
        except Exception:
            return _local_selective_log_softmax
        return trl_version
    return _local_selective_log_softmax


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)[..., index]`` without materialising the log-softmax.

    logits: (B, T, V); index: (B, T) int64. Returns (B, T) in the logits' dtype.
    """
    return _implementation()(logits, index)


def token_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor | None = None
) -> torch.Tensor:
    """Log-probability of each target token under ``softmax(logits / temperature)``.

    logits: (B, W, V), position j scoring ``targets[:, j]``; targets: (B, W) int64;
    temperature: (B,) or None for 1. Returns (B, W) float32. The temperature must be the
    one the rollout was sampled at, or ``exp(new - old)`` compares two different
    distributions and is not an importance ratio.
    """
    logits = logits.float()
    if temperature is not None and bool((temperature != 1).any()):
        logits = logits / temperature.to(logits.dtype)[:, None, None]
    return selective_log_softmax(logits, targets)


@functools.cache
def _accepts_logits_to_keep(model_class: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_class.forward).parameters


def model_logprobs(
    model: torch.nn.Module,
    batch: TokenBatch,
    *,
    tempered: bool = True,
    value_head: torch.nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass: per-token logprobs over the window, and values if asked.

    ``model`` is a causal LM (a peft model is fine: keyword arguments pass through).
    ``tempered`` divides logits by each row's sampling temperature (for ratios against the
    recorded logprobs); False scores the model itself (DPO, cloning). ``value_head`` maps
    the last hidden state (…, H) to (…, 1). Returns logprobs (B, W) float32 and values
    (B, W) float32 or None. Padding, prompt and injected targets are *not* zeroed here:
    every consumer masks with ``batch.mask``.
    """
    kwargs: dict = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cropped = _accepts_logits_to_keep(type(base))
    if cropped:
        kwargs["logits_to_keep"] = batch.width + 1
    if value_head is not None:
        kwargs["output_hidden_states"] = True
    output = model(**kwargs, use_cache=False)
    start = 0 if cropped else batch.offset
    logits = output.logits[:, start:-1]  # (B, W, V)
    logprobs = token_logprobs(logits, batch.targets, batch.temperature if tempered else None)
    values = None
    if value_head is not None:
        hidden = output.hidden_states[-1][:, batch.offset : -1]  # (B, W, H)
        values = value_head(hidden.float()).squeeze(-1)  # (B, W)
    return logprobs, values
