"""``grpo``: group-normalised advantages ``(r - mean) / std`` with a clipped surrogate.

TRL has a ``GRPOTrainer``, but it generates its own completions from a prompt dataset;
here the rollouts are already recorded (token ids, logprobs, rewards from the gateway), so
only the loss is needed, and it is :func:`rl.losses.grpo_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rl.algorithms.base import setting
from rl.algorithms.group import GroupConfig, GroupPolicyGradient

if TYPE_CHECKING:
    import torch

__all__ = ["GRPO", "GRPOConfig"]


@dataclass(frozen=True)
class GRPOConfig(GroupConfig):
    algorithm = "grpo"

    scale_rewards: bool = setting(
        True, "divide by the group's reward std (False: Dr. GRPO's unscaled r - mean)"
    )


class GRPO(GroupPolicyGradient[GRPOConfig]):
    name = "grpo"
    summary = (
        "clean scalar or continuous outcome rewards with several samples per item; "
        "the default group-relative policy gradient"
    )
    Config = GRPOConfig

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        from rl.advantages import group_normalized_advantages

        return group_normalized_advantages(rewards, group_ids, scale=self.config.scale_rewards)
