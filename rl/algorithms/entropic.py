"""``entropic``: advantages ``n * softmax(r / tau) - 1`` within each group.

For rare successes: the weight of a group's best samples depends on ``tau`` (in reward
units), not on how many failures surround them, and it optimises a soft maximum of the
rewards rather than their mean. See :func:`rl.advantages.entropic_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rl.algorithms.base import setting
from rl.algorithms.group import GroupConfig, GroupPolicyGradient

if TYPE_CHECKING:
    import torch

__all__ = ["Entropic", "EntropicConfig"]


@dataclass(frozen=True)
class EntropicConfig(GroupConfig):
    algorithm = "entropic"

    tau: float = setting(
        0.5,
        "temperature in reward units: small → only each group's best sample counts; "
        "large → the plain mean-reward gradient",
        gt=0,
    )


class Entropic(GroupPolicyGradient[EntropicConfig]):
    name = "entropic"
    summary = "rare successes: most samples fail, a few succeed; learn from the best of each group"
    Config = EntropicConfig

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        from rl.advantages import entropic_advantages

        return entropic_advantages(rewards, group_ids, self.config.tau)
