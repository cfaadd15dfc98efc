"""Shared by ``grpo`` and ``entropic``: a clipped policy gradient with one advantage per
sample computed from its group (the samples of the same item).

The two differ only in how rewards become advantages. Groups of one sample, or whose
samples all got the same reward, carry no signal about which completion is better, and are
dropped before training (TRL's GRPO keeps them at advantage 0, which costs forward passes
and, with token averaging, dilutes the others).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

from rl.algorithms.base import (
    Algorithm,
    AlgorithmConfig,
    ScoredSample,
    sequence_batch,
    setting,
)
from rl.data import Sample, group_by

if TYPE_CHECKING:
    import torch

    from rl.policy import Policy

__all__ = ["GroupConfig", "GroupPolicyGradient", "ratio_stats"]


@dataclass(frozen=True)
class GroupConfig(AlgorithmConfig):
    learning_rate: float = setting(3e-4, "AdamW learning rate for the LoRA weights", gt=0, le=1)
    epochs: int = setting(2, "passes over the usable samples (GRPO's μ iterations)", ge=1, le=1000)
    clip_eps: float = setting(0.2, "PPO clip range ε for the importance ratio", gt=0, lt=1)
    beta: float = setting(
        0.0, "k3 KL-to-base coefficient; 0 skips the reference forward pass", ge=0
    )
    aggregation: Literal["token", "sequence"] = setting(
        "token",
        "token: average over all tokens (long answers weigh more); "
        "sequence: per completion first (original GRPO)",
    )


GroupConfigT = TypeVar("GroupConfigT", bound=GroupConfig)


class GroupPolicyGradient(Algorithm[GroupConfigT, ScoredSample]):
    """Clipped surrogate with per-sample group-relative advantages (see module doc)."""

    @abstractmethod
    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """rewards, group_ids: (N,) over usable groups only → advantages (N,)."""

    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[ScoredSample]:
        import torch

        groups = group_by(samples)
        usable = [
            members
            for members in groups.values()
            if len(members) > 1 and len({samples[i].reward for i in members}) > 1
        ]
        if not usable:
            sizes = sorted({len(m) for m in groups.values()})
            raise self.no_signal(
                f"none of {len(groups)} groups has two samples with different rewards "
                f"(group sizes {sizes})"
            )
        chosen = [samples[i] for members in usable for i in members]
        group_ids = torch.tensor(
            [g for g, members in enumerate(usable) for _ in members], dtype=torch.long
        )
        rewards = torch.tensor([s.reward for s in chosen], dtype=torch.float64)
        advantages = self.advantages(rewards, group_ids).tolist()
        items = [ScoredSample(s, a) for s, a in zip(chosen, advantages, strict=True)]
        items = [item for item in items if item.sample.n_trained > 0]
        if not items:
            raise self.no_signal("the usable groups have no trained completion tokens")
        if self.config.beta > 0:
            refs = policy.per_sample(
                [item.sample for item in items],
                lambda batch: policy.logprobs(batch)[0],
                reference=True,
            )
            for item, ref in zip(items, refs, strict=True):
                item.tokens["ref_logprobs"] = ref
        self.info = {"groups": len(groups), "groups_used": len(usable), "items": len(items)}
        return items

    def loss(
        self, policy: Policy, items: Sequence[ScoredSample]
    ) -> tuple[torch.Tensor, dict[str, float]]:

        from rl.losses import grpo_loss, k3_kl, masked_mean

        config = self.config
        batch, logprobs, advantages = sequence_batch(policy, items)
        ref = None
        if config.beta > 0:
            ref = batch.place([item.tokens["ref_logprobs"] for item in items])
        loss = grpo_loss(
            logprobs,
            batch.old_logprobs,
            advantages,
            batch.mask,
            clip_eps=config.clip_eps,
            ref_logprobs=ref,
            beta=config.beta,
            how=config.aggregation,
        )
        stats = ratio_stats(logprobs, batch.old_logprobs, batch.mask, config.clip_eps)
        if ref is not None:
            stats["kl_ref"] = float(masked_mean(k3_kl(logprobs.detach(), ref), batch.mask))
        return loss, stats

    def trained_tokens(self, item: ScoredSample) -> int:
        return item.sample.n_trained


def ratio_stats(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor, clip_eps: float
) -> dict[str, float]:
    """How far the policy moved from the sampler: clipped share of tokens and k3 KL.

    All (B, W). ``approx_kl`` right after sampling measures the trainer/sampler numeric
    mismatch (≈ 0 for the same model and temperature).
    """
    import torch

    from rl.losses import k3_kl, masked_mean

    with torch.no_grad():
        log_ratio = logprobs.detach() - old_logprobs
        clipped = (log_ratio.exp() - 1.0).abs() > clip_eps
        return {
            "clip_fraction": float(masked_mean(clipped.float(), mask)),
            "approx_kl": float(masked_mean(k3_kl(logprobs.detach(), old_logprobs), mask)),
        }
