"""``bon_bc``: best-of-N behavioural cloning — supervised fine-tuning on each group's best.

From each group, the ``per_group`` highest-reward samples whose reward is above
``threshold`` (distinct completions) are cloned with a plain negative log-likelihood on
their trained tokens. Samples are scored at temperature 1: the model itself is fit.

TRL's ``SFTTrainer`` does not fit: it builds a ``datasets.Dataset`` from text or chat
messages and tokenises it, whereas the samples are recorded token ids with
environment-injected tokens masked out; the loss is :func:`rl.losses.bc_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from rl.algorithms.base import Algorithm, AlgorithmConfig, ScoredSample, setting
from rl.data import Sample, group_by

if TYPE_CHECKING:
    import torch

    from rl.policy import Policy

__all__ = ["BestOfNBC", "BestOfNConfig", "best_of_groups"]


@dataclass(frozen=True)
class BestOfNConfig(AlgorithmConfig):
    algorithm = "bon_bc"

    epochs: int = setting(3, "passes over the cloned samples", ge=1, le=1000)
    threshold: float = setting(0.0, "clone only samples whose reward is > this")
    per_group: int = setting(1, "clone at most this many of each group's best samples", ge=1)
    aggregation: Literal["token", "sequence"] = setting(
        "token", "token: average NLL over all tokens; sequence: per completion first"
    )


def best_of_groups(samples: Sequence[Sample], threshold: float, per_group: int) -> list[int]:
    """Indices of each group's best samples above ``threshold``: highest reward first,
    ties in sample order, identical completions once, at most ``per_group`` per group."""
    picked: list[int] = []
    for members in group_by(samples).values():
        ranked = sorted(members, key=lambda i: -samples[i].reward)
        seen: set[tuple[int, ...]] = set()
        for i in ranked:
            if samples[i].reward <= threshold or len(seen) == per_group:
                break
            if samples[i].completion_ids not in seen:
                seen.add(samples[i].completion_ids)
                picked.append(i)
    return picked


class BestOfNBC(Algorithm[BestOfNConfig, ScoredSample]):
    name = "bon_bc"
    summary = (
        "few good samples: clone each item's best completion when successes exist but "
        "rewards are too sparse or noisy for a policy gradient"
    )
    Config = BestOfNConfig

    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[ScoredSample]:
        usable = [s for s in samples if s.n_trained > 0]
        picked = best_of_groups(usable, self.config.threshold, self.config.per_group)
        if not picked:
            best = max((s.reward for s in usable), default=None)
            raise self.no_signal(
                f"no sample has reward > threshold {self.config.threshold} (best: {best})"
            )
        items = [ScoredSample(usable[i], usable[i].reward) for i in picked]
        self.info = {
            "items": len(items),
            "groups_used": len({item.sample.group for item in items}),
            "mean_cloned_reward": sum(item.advantage for item in items) / len(items),
        }
        return items

    def loss(
        self, policy: Policy, items: Sequence[ScoredSample]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from rl.losses import bc_loss

        batch = policy.batch([item.sample for item in items])
        logprobs, _ = policy.logprobs(batch, tempered=False)  # (B, W)
        loss = bc_loss(logprobs, batch.mask, self.config.aggregation)
        return loss, {"nll": loss.item()}

    def trained_tokens(self, item: ScoredSample) -> int:
        return item.sample.n_trained
