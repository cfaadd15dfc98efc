"""``dpo``: direct preference optimisation on pairs formed inside each group.

A pair is (higher-reward, lower-reward) completion of the same item, reward gap above
``min_reward_gap``; each group gives at most ``max_pairs_per_group`` pairs, widest gaps
first. DPO lowers the rejected side's likelihood without saying where the mass goes, and
trained too long it can move it onto tokens neither side used (reward falls while the
preference margin grows); ``nll_weight`` adds RPO's NLL term on the chosen side against
that. The reference is the base model (adapter disabled); its sequence logprobs are
computed once before training, since the base is frozen.

TRL's ``DPOTrainer`` does not fit: it takes a ``datasets.Dataset`` of prompt/chosen/
rejected *text* and re-tokenises it, while our pairs are recorded token ids (re-tokenising
decoded text does not give the same ids back in general, and environment-injected tokens
would have to be masked anyway); and it would add ``datasets``/``pandas`` to the project
for a loss that is one line (:func:`rl.losses.dpo_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rl.algorithms.base import Algorithm, AlgorithmConfig, setting
from rl.data import Sample, group_by

if TYPE_CHECKING:
    import torch

    from rl.policy import Policy

__all__ = ["DPO", "DPOConfig", "Pair", "pairs_within_groups"]


@dataclass(frozen=True)
class DPOConfig(AlgorithmConfig):
    algorithm = "dpo"

    learning_rate: float = setting(1e-4, "AdamW learning rate for the LoRA weights", gt=0, le=1)
    minibatch_size: int = setting(8, "pairs per optimiser step", ge=1)
    micro_batch_size: int = setting(
        4, "pairs per forward pass (two sequences each); gradients accumulate", ge=1
    )
    beta: float = setting(0.1, "DPO β: strength of the implicit KL to the base model", gt=0)
    label_smoothing: float = setting(
        0.0, "probability that a pair's preference is wrong (conservative DPO)", ge=0, lt=0.5
    )
    min_reward_gap: float = setting(
        0.0, "a pair needs chosen.reward - rejected.reward > this", ge=0
    )
    max_pairs_per_group: int = setting(
        8, "at most this many pairs per group (widest reward gaps first)", ge=1
    )
    nll_weight: float = setting(
        0.0,
        "weight of an NLL term on the chosen completions (RPO); > 0 counters DPO pushing "
        "probability onto tokens neither side used",
        ge=0,
    )


@dataclass
class Pair:
    """A preference pair, with the reference's sequence logprobs of both sides."""

    chosen: Sample
    rejected: Sample
    ref_chosen: float = 0.0
    ref_rejected: float = 0.0


def pairs_within_groups(
    samples: Sequence[Sample], min_gap: float, per_group: int
) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs: same group, reward gap > ``min_gap``, distinct
    completions; per group the ``per_group`` widest gaps, ties in sample order."""
    pairs: list[tuple[int, int]] = []
    for members in group_by(samples).values():
        candidates = [
            (samples[i].reward - samples[j].reward, i, j)
            for i in members
            for j in members
            if samples[i].reward - samples[j].reward > min_gap
            and samples[i].completion_ids != samples[j].completion_ids
        ]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        pairs.extend((i, j) for _, i, j in candidates[:per_group])
    return pairs


class DPO(Algorithm[DPOConfig, Pair]):
    name = "dpo"
    summary = (
        "pairwise preferences: rewards that rank completions of the same item "
        "better than they score them absolutely"
    )
    Config = DPOConfig

    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[Pair]:
        config = self.config
        usable = [s for s in samples if s.n_trained > 0]
        index_pairs = pairs_within_groups(usable, config.min_reward_gap, config.max_pairs_per_group)
        if not index_pairs:
            raise self.no_signal(
                f"no pair of distinct completions in one group with a reward gap > "
                f"{config.min_reward_gap} among {len(usable)} samples"
            )
        involved = sorted({i for pair in index_pairs for i in pair})
        # Masked per token, so each sum below is the sample's sequence logprob.
        refs = policy.per_sample(
            [usable[i] for i in involved],
            lambda b: policy.logprobs(b, tempered=False)[0] * b.mask,
            reference=True,
        )
        ref_of = {i: float(r.sum()) for i, r in zip(involved, refs, strict=True)}
        items = [Pair(usable[i], usable[j], ref_of[i], ref_of[j]) for i, j in index_pairs]
        self.info = {"pairs": len(items), "groups_used": len({p.chosen.group for p in items})}
        return items

    def loss(self, policy: Policy, items: Sequence[Pair]) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        from rl.losses import bc_loss, dpo_loss, sequence_logprobs

        config = self.config
        n = len(items)
        batch = policy.batch([p.chosen for p in items] + [p.rejected for p in items])
        logprobs, _ = policy.logprobs(batch, tempered=False)  # (2P, W)
        sequences = sequence_logprobs(logprobs, batch.mask)  # (2P,)
        chosen, rejected = sequences[:n], sequences[n:]  # (P,), (P,)
        ref_chosen = torch.tensor([p.ref_chosen for p in items], device=sequences.device)
        ref_rejected = torch.tensor([p.ref_rejected for p in items], device=sequences.device)
        loss = dpo_loss(
            chosen, rejected, ref_chosen, ref_rejected, config.beta, config.label_smoothing
        )
        if config.nll_weight > 0:
            chosen_tokens = batch.mask.clone()
            chosen_tokens[n:] = False
            loss = loss + config.nll_weight * bc_loss(logprobs, chosen_tokens)
        with torch.no_grad():
            margin = config.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        stats = {
            "reward_accuracy": float((margin > 0).float().mean()),
            "reward_margin": float(margin.mean()),
        }
        return loss, stats

    def trained_tokens(self, item: Pair) -> int:
        return item.chosen.n_trained + item.rejected.n_trained
