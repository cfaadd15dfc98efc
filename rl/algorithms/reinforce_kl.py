"""``reinforce_kl``: REINFORCE with a reward baseline and a k3 KL penalty to the base model.

For drift risk: the KL term pulls the policy back towards the base (the model with the
adapter disabled, computed once before training — the base is frozen), so a noisy or
exploitable reward cannot drag it far. Every sample is trained, zero-advantage ones too:
they still carry the KL term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

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

__all__ = ["ReinforceKL", "ReinforceKLConfig"]


@dataclass(frozen=True)
class ReinforceKLConfig(AlgorithmConfig):
    algorithm = "reinforce_kl"

    beta: float = setting(0.05, "k3 KL-to-base coefficient", ge=0)
    baseline: Literal["group", "batch"] = setting(
        "group",
        "subtract the mean reward of the sample's group (a group of one: of the batch), "
        "or of the whole batch",
    )
    is_cap: float = setting(
        2.0, "cap on the importance weight π/π_old in steps after the first", ge=1
    )


class ReinforceKL(Algorithm[ReinforceKLConfig, ScoredSample]):
    name = "reinforce_kl"
    summary = (
        "drift risk: a noisy or exploitable reward, or a policy that must stay close to the "
        "base model; plain REINFORCE held near the base by a KL penalty"
    )
    Config = ReinforceKLConfig

    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[ScoredSample]:
        chosen = [s for s in samples if s.n_trained > 0]
        if not chosen:
            raise self.no_signal("no sample has a trained completion token")
        batch_mean = sum(s.reward for s in chosen) / len(chosen)
        baselines = [batch_mean] * len(chosen)
        if self.config.baseline == "group":
            for members in group_by(chosen).values():
                if len(members) > 1:
                    mean = sum(chosen[i].reward for i in members) / len(members)
                    for i in members:
                        baselines[i] = mean
        advantages = [s.reward - b for s, b in zip(chosen, baselines, strict=True)]
        if not any(advantages):
            raise self.no_signal(
                f"every advantage is 0: rewards are equal within each {self.config.baseline}"
            )
        refs = policy.per_sample(chosen, lambda b: policy.logprobs(b)[0], reference=True)
        items = [
            ScoredSample(s, a, {"ref_logprobs": r})
            for s, a, r in zip(chosen, advantages, refs, strict=True)
        ]
        self.info = {"items": len(items)}
        return items

    def loss(
        self, policy: Policy, items: Sequence[ScoredSample]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        from rl.losses import k3_kl, masked_mean, reinforce_kl_loss

        config = self.config
        batch, logprobs, advantages = sequence_batch(policy, items)
        ref = batch.place([item.tokens["ref_logprobs"] for item in items])  # (B, W)
        loss = reinforce_kl_loss(
            logprobs,
            batch.old_logprobs,
            advantages,
            batch.mask,
            ref,
            beta=config.beta,
            is_cap=config.is_cap,
        )
        with torch.no_grad():
            ratio = (logprobs.detach() - batch.old_logprobs).exp()
            stats = {
                "capped_fraction": float(masked_mean((ratio > config.is_cap).float(), batch.mask)),
                "approx_kl": float(
                    masked_mean(k3_kl(logprobs.detach(), batch.old_logprobs), batch.mask)
                ),
                "kl_ref": float(masked_mean(k3_kl(logprobs.detach(), ref), batch.mask)),
            }
        return loss, stats

    def trained_tokens(self, item: ScoredSample) -> int:
        return item.sample.n_trained
