"""``ppo_gae``: PPO's clipped surrogate on per-token GAE advantages, with a value head.

The value head is one linear layer on the last hidden state, trained jointly with the LoRA
(the trunk is shared, so ``vf_coef`` is kept small) and saved beside the adapter as
``value_head.safetensors``; continuing from such an adapter continues its value head too.
The outcome reward sits on each completion's last trained token. Old values and
advantages are computed once, before the first step, as PPO prescribes.

TRL 1.16 has no PPO trainer any more, and GAE is not in it: this is ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rl.algorithms.base import Algorithm, AlgorithmConfig, ScoredSample, setting
from rl.algorithms.group import ratio_stats
from rl.data import Sample
from rl.lora import load_head

if TYPE_CHECKING:
    import torch

    from rl.policy import Policy

__all__ = ["PPOGAE", "VALUE_HEAD", "PPOGAEConfig"]

VALUE_HEAD = "value_head"


@dataclass(frozen=True)
class PPOGAEConfig(AlgorithmConfig):
    algorithm = "ppo_gae"

    epochs: int = setting(4, "PPO epochs over the batch", ge=1, le=1000)
    clip_eps: float = setting(0.2, "PPO clip range ε for the importance ratio", gt=0, lt=1)
    gamma: float = setting(1.0, "discount per token", gt=0, le=1)
    lam: float = setting(0.95, "GAE λ: 0 = one-step TD, 1 = Monte-Carlo return", ge=0, le=1)
    vf_coef: float = setting(0.1, "weight of the value loss", ge=0)
    value_clip: float = setting(
        0.0, "clip new values to ± this around the old ones; 0 turns it off", ge=0
    )
    normalize_advantages: bool = setting(True, "whiten advantages over the batch's trained tokens")


class PPOGAE(Algorithm[PPOGAEConfig, ScoredSample]):
    name = "ppo_gae"
    summary = (
        "clean scalar outcome with long or multi-step completions: per-token credit "
        "assignment through a learned value, works with one sample per item"
    )
    Config = PPOGAEConfig
    loaded_head = False  # set by init_heads: did the value head come from init_adapter?

    def init_heads(self, policy: Policy, init_adapter: Path | None) -> None:
        import torch

        base = policy.model.get_base_model()
        hidden = base.get_output_embeddings().weight.shape[1]
        head = torch.nn.Linear(hidden, 1)
        # Zero start: V = 0 everywhere, so the first advantages are the discounted reward.
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        self.loaded_head = load_head(init_adapter, VALUE_HEAD, head)
        self.heads = {VALUE_HEAD: head.to(policy.device)}

    def prepare(self, policy: Policy, samples: Sequence[Sample]) -> list[ScoredSample]:
        import torch

        from rl.advantages import gae, whiten

        chosen = [s for s in samples if s.n_trained > 0]
        if not chosen:
            raise self.no_signal("no sample has a trained completion token")
        # A fresh value head predicts 0 everywhere: equal rewards then give every token
        # the same advantage, which whitening turns into noise.
        if len({s.reward for s in chosen}) == 1 and not self.loaded_head:
            raise self.no_signal(f"all {len(chosen)} rewards are equal ({chosen[0].reward})")
        head = self.heads[VALUE_HEAD]
        values = policy.per_sample(chosen, lambda b: policy.logprobs(b, value_head=head)[1])
        width = max(len(s.completion_ids) for s in chosen)
        rewards = torch.zeros(len(chosen), width)  # (N, L)
        value_grid = torch.zeros(len(chosen), width)  # (N, L)
        mask = torch.zeros(len(chosen), width, dtype=torch.bool)  # (N, L)
        for row, (sample, value) in enumerate(zip(chosen, values, strict=True)):
            trained = torch.tensor(sample.trained)
            mask[row, : len(trained)] = trained
            value_grid[row, : len(value)] = value
            last = int(trained.nonzero()[-1])
            rewards[row, last] = sample.reward
        config = self.config
        advantages, returns = gae(rewards, value_grid, mask, config.gamma, config.lam)
        if config.normalize_advantages:
            advantages = whiten(advantages, mask)
        items = []
        for row, sample in enumerate(chosen):
            n = len(sample.completion_ids)
            tokens = {
                "advantages": advantages[row, :n],
                "returns": returns[row, :n],
                "old_values": value_grid[row, :n],
            }
            items.append(ScoredSample(sample, tokens=tokens))
        self.info = {"items": len(items), "value_head_loaded": self.loaded_head}
        return items

    def loss(
        self, policy: Policy, items: Sequence[ScoredSample]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        from rl.losses import ppo_loss, value_loss

        config = self.config
        batch = policy.batch([item.sample for item in items])
        logprobs, values = policy.logprobs(batch, value_head=self.heads[VALUE_HEAD])
        assert values is not None
        advantages = batch.place([item.tokens["advantages"] for item in items])  # (B, W)
        returns = batch.place([item.tokens["returns"] for item in items])  # (B, W)
        old_values = batch.place([item.tokens["old_values"] for item in items])  # (B, W)
        policy_loss = ppo_loss(
            logprobs, batch.old_logprobs, advantages, batch.mask, clip_eps=config.clip_eps
        )
        critic_loss = value_loss(
            values, returns, batch.mask, old_values, clip=config.value_clip or None
        )
        stats = ratio_stats(logprobs, batch.old_logprobs, batch.mask, config.clip_eps)
        stats |= {"policy_loss": policy_loss.item(), "value_loss": critic_loss.item()}
        return policy_loss + config.vf_coef * critic_loss, stats

    def trained_tokens(self, item: ScoredSample) -> int:
        return item.sample.n_trained
