"""Policy-gradient, value, preference and cloning losses, as pure tensor functions.

Conventions: ``logprobs`` are the current policy's per-token log-probabilities (B, W) with
grad; ``old_logprobs`` those recorded at sampling time (B, W); ``mask`` (B, W) bool marks
trained completion tokens. Every loss is a scalar to *minimise* (objectives negated).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "Aggregation",
    "bc_loss",
    "clipped_surrogate",
    "dpo_loss",
    "grpo_loss",
    "k3_kl",
    "masked_mean",
    "ppo_loss",
    "reinforce_kl_loss",
    "sequence_logprobs",
    "value_loss",
]

Aggregation = Literal["token", "sequence"]


def masked_mean(
    values: torch.Tensor, mask: torch.Tensor, how: Aggregation = "token"
) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True. values, mask: (B, W) → scalar.

    ``token``: over all masked tokens of the batch, so long completions weigh more (DAPO,
    TRL's default). ``sequence``: per row first, then over rows with any masked token (the
    original GRPO), so every completion weighs the same.
    """
    mask = mask.to(values.dtype)
    if how == "token":
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    per_row = mask.sum(-1)  # (B,)
    row_means = (values * mask).sum(-1) / per_row.clamp(min=1.0)  # (B,)
    has_tokens = (per_row > 0).to(values.dtype)
    return (row_means * has_tokens).sum() / has_tokens.sum().clamp(min=1.0)


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
) -> torch.Tensor:
    """Per-token negative PPO objective ``-min(r A, clip(r, 1 ± eps) A)``, r = exp(new - old).

    logprobs, old_logprobs: (B, W); advantages: (B, W) or anything broadcasting to it
    (e.g. (B, 1) for one advantage per sequence). Returns (B, W).
    """
    ratio = (logprobs - old_logprobs).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return -torch.minimum(unclipped, clipped)


def ppo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped surrogate with per-token advantages (B, W), token-averaged."""
    return masked_mean(clipped_surrogate(logprobs, old_logprobs, advantages, clip_eps), mask)


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip: float | None = None,
) -> torch.Tensor:
    """``0.5 * (V - R)^2`` token-averaged; with ``clip``, PPO's pessimistic clipped form.

    values, returns, old_values: (B, W). Clipping keeps the new value within ``± clip`` of
    the value at sampling time and takes the larger of the two errors.
    """
    error = (values - returns) ** 2
    if clip is not None and old_values is not None:
        clipped = old_values + (values - old_values).clamp(-clip, clip)
        error = torch.maximum(error, (clipped - returns) ** 2)
    return 0.5 * masked_mean(error, mask)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π ‖ π_ref) on tokens sampled from π.

    ``exp(ref - logp) - (ref - logp) - 1``: unbiased, always ≥ 0, lower variance than
    ``logp - ref`` (Schulman's "Approximating KL divergence"). (B, W) → (B, W).
    """
    delta = ref_logprobs - logprobs
    return delta.exp() - delta - 1.0


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    ref_logprobs: torch.Tensor | None = None,
    beta: float = 0.0,
    how: Aggregation = "token",
) -> torch.Tensor:
    """GRPO: clipped surrogate with one advantage per sequence, plus ``beta`` times k3 KL.

    advantages: (B,), broadcast over the row's tokens; ref_logprobs: (B, W), needed when
    ``beta > 0``. Returns a scalar aggregated by ``how`` (see :func:`masked_mean`).
    """
    per_token = clipped_surrogate(logprobs, old_logprobs, advantages[:, None], clip_eps)
    if beta > 0:
        if ref_logprobs is None:
            raise ValueError("grpo_loss with beta > 0 needs ref_logprobs")
        per_token = per_token + beta * k3_kl(logprobs, ref_logprobs)
    return masked_mean(per_token, mask, how)


def reinforce_kl_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logprobs: torch.Tensor,
    beta: float = 0.05,
    is_cap: float = 2.0,
) -> torch.Tensor:
    """REINFORCE ``-A log π`` with truncated importance weights and a k3 KL-to-reference.

    advantages: (B,) per sequence; ref_logprobs: (B, W) under the reference (the base
    model). The weight ``min(r, is_cap)`` (r = exp(new - old), no gradient) corrects for
    the policy having moved since sampling during later steps on the same batch; on the
    first step r = 1 and this is plain REINFORCE. Token-averaged.
    """
    weight = (logprobs - old_logprobs).detach().exp().clamp(max=is_cap)
    policy_term = -weight * advantages[:, None] * logprobs
    return masked_mean(policy_term + beta * k3_kl(logprobs, ref_logprobs), mask)


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-probability of each row's trained tokens: (B, W) → (B,) sums over ``mask``."""
    return (logprobs * mask.to(logprobs.dtype)).sum(-1)


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """DPO's sigmoid loss over pairs, mean over pairs.

    All four: (P,) sequence log-probabilities (see :func:`sequence_logprobs`) of the chosen
    and rejected completion under the policy and the reference. With
    ``z = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))`` the loss is
    ``-(1 - s) log sigmoid(z) - s log sigmoid(-z)``, ``s = label_smoothing`` (conservative DPO).
    """
    z = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    losses = -(1.0 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return losses.mean()


def bc_loss(logprobs: torch.Tensor, mask: torch.Tensor, how: Aggregation = "token") -> torch.Tensor:
    """Behavioural cloning: negative log-likelihood of the masked tokens. (B, W) → scalar."""
    return -masked_mean(logprobs, mask, how)
