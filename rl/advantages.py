"""Advantage estimators: GAE, group-normalised advantages, entropic weights, whitening.

Pure tensor functions; each is tested against hand-computed values or a naive loop.
Groups are given as ``group_ids`` (N,) int64 in ``[0, G)``: samples of one prompt share one.
"""

from __future__ import annotations

import torch

__all__ = [
    "entropic_advantages",
    "entropic_weights",
    "gae",
    "group_mean",
    "group_normalized_advantages",
    "whiten",
]


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked steps.

    rewards, values: (B, T) float; mask: (B, T) bool, True on the policy's own steps.
    Unmasked steps (padding, environment-injected tokens) are skipped, not treated as
    steps: the step before an injected span bootstraps from the value of the next masked
    step, since the injected tokens are the environment's transition, not actions. After a
    row's last masked step the episode ends (next value 0). Rewards on unmasked steps are
    ignored.

        delta_t = r_t + gamma * V_next - V_t
        A_t     = delta_t + gamma * lam * A_next

    Returns advantages (B, T) and returns ``A + V`` (B, T), both 0 where mask is False.
    """
    mask = mask.bool()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in range(values.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        on = mask[:, t]
        advantages[:, t] = torch.where(on, advantage, torch.zeros_like(advantage))
        next_value = torch.where(on, values[:, t], next_value)
        next_advantage = torch.where(on, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale the masked entries to mean 0, std 1 (population); others become 0.

    values, mask: same shape. PPO normalises GAE advantages this way per batch so the
    learning rate does not depend on the reward scale.
    """
    mask = mask.bool()
    selected = values[mask]
    mean = selected.mean()
    std = selected.std(unbiased=False)
    return torch.where(mask, (values - mean) / (std + eps), torch.zeros_like(values))


def group_mean(values: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Each entry's group mean, broadcast back. values, group_ids: (N,) → (N,)."""
    groups = int(group_ids.max()) + 1
    sums = torch.zeros(groups, dtype=values.dtype, device=values.device)
    sums.index_add_(0, group_ids, values)
    counts = torch.bincount(group_ids, minlength=groups).to(values.dtype)
    return (sums / counts)[group_ids]


def group_normalized_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    scale: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO's advantage: ``(r - mean_g) / (std_g + eps)``, or ``r - mean_g`` if not ``scale``.

    rewards, group_ids: (N,). The std is the population std of the group, so a two-sample
    group with different rewards gets advantages ±1. A group of one, or with equal rewards,
    gets 0: it says nothing about which completion is better.
    """
    mean = group_mean(rewards, group_ids)  # (N,)
    centred = rewards - mean
    if not scale:
        return centred
    std = group_mean(centred**2, group_ids).sqrt()  # (N,)
    return centred / (std + eps)


def entropic_weights(rewards: torch.Tensor, group_ids: torch.Tensor, tau: float) -> torch.Tensor:
    """``softmax(r / tau)`` within each group. rewards, group_ids: (N,) → (N,), sums to 1.

    These are the weights of the gradient of the *entropic* objective
    ``tau * log E[exp(r / tau)]`` over a group's samples: a soft maximum of the rewards.
    ``tau`` is in reward units and sets how greedy the weighting is. As ``tau → 0`` all the
    weight goes to the group's best sample (learn from the rare success, ignore how rare);
    as ``tau → ∞`` the weights flatten to ``1/n`` and the objective becomes the mean reward.
    With 0/1 rewards, ``tau = 0.5`` gives one success among eight e² ≈ 7.4 times the weight
    of a failure.
    """
    scaled = rewards / tau
    groups = int(group_ids.max()) + 1
    # Per-group max for a stable softmax.
    peak = torch.full((groups,), float("-inf"), dtype=scaled.dtype, device=scaled.device)
    peak = peak.scatter_reduce(0, group_ids, scaled, reduce="amax")
    exp = (scaled - peak[group_ids]).exp()
    totals = torch.zeros(groups, dtype=scaled.dtype, device=scaled.device).index_add(
        0, group_ids, exp
    )
    return exp / totals[group_ids]


def entropic_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, tau: float) -> torch.Tensor:
    """Advantages ``n_g * softmax(r / tau)_i - 1``: entropic weights with a baseline.

    rewards, group_ids: (N,) → (N,). Subtracting the uniform weight ``1/n`` (then scaling
    by the group size ``n``) keeps each group's advantages summing to 0, so the gradient's
    variance drops without bias; for large ``tau`` they approach ``(r - mean_g) / tau``, the
    plain group baseline. Groups of one get 0.
    """
    weights = entropic_weights(rewards, group_ids, tau)
    sizes = torch.bincount(group_ids).to(weights.dtype)[group_ids]
    return sizes * weights - 1.0
