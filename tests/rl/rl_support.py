"""Helpers for the rl tests: seeded sampling from a model, and a synthetic reward.

Sampling is plain torch (full forward per token; the tiny model makes that cheap) and
records each token's logprob under ``softmax(logits / temperature)``, exactly what the
gateway records, so the trainer's first-step ratios must come out as 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rl.data import Sample

# The pre-trained tiny model writes hex digits (the target) 30% of the time and other
# lowercase letters otherwise: it already succeeds sometimes, so every algorithm gets a
# signal, and the target is one class the model has a representation of, so what RL
# learns on some contexts carries over to others.
TARGET = frozenset(b"0123456789abcdef")
DISTRACTORS = b"ghijklmnopqrstuvwxyz"
TARGET_RATE = 0.3

PROMPTS = tuple(f"q{i}:".encode() for i in range(8))


def pretrained_tiny(steps: int = 60, seed: int = 0) -> tuple[torch.nn.Module, object]:
    """The seed-``seed`` tiny model after a short full fine-tune on prompt + random letters."""
    from sia.models.tiny import build_tiny

    model, tokenizer = build_tiny(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    hex_digits = torch.tensor(sorted(TARGET))
    letters = torch.tensor(list(DISTRACTORS))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        prompts = torch.tensor(
            [list(PROMPTS[i]) for i in torch.randint(8, (32,), generator=generator)]
        )
        pick_target = torch.rand(32, 8, generator=generator) < TARGET_RATE
        chars = torch.where(
            pick_target,
            hex_digits[torch.randint(len(hex_digits), (32, 8), generator=generator)],
            letters[torch.randint(len(letters), (32, 8), generator=generator)],
        )
        ids = torch.cat([prompts, chars], dim=1)
        labels = ids.clone()
        labels[:, : prompts.shape[1]] = -100
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer


def share_in_target(completion: Sequence[int]) -> float:
    """The synthetic reward: share of completion tokens in ``TARGET``."""
    return sum(t in TARGET for t in completion) / len(completion)


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompts: Sequence[bytes] = PROMPTS,
    *,
    group_size: int = 4,
    new_tokens: int = 6,
    temperature: float = 1.0,
    seed: int = 0,
    reward: Callable[[Sequence[int]], float] = share_in_target,
) -> list[Sample]:
    """``group_size`` completions of each prompt, sampled with one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    prompt_ids = [list(p) for p in prompts for _ in range(group_size)]
    groups = [p.decode() for p in prompts for _ in range(group_size)]
    ids = torch.tensor(prompt_ids)  # (N, P): prompts share one length
    logprobs = []
    was_training = model.training
    model.eval()
    for _ in range(new_tokens):
        logits = model(input_ids=ids).logits[:, -1].float() / temperature  # (N, V)
        dist = torch.log_softmax(logits, dim=-1)
        token = torch.multinomial(dist.exp(), 1, generator=generator)  # (N, 1)
        logprobs.append(dist.gather(-1, token))
        ids = torch.cat([ids, token], dim=1)
    model.train(was_training)
    completions = ids[:, len(prompt_ids[0]) :].tolist()
    recorded = torch.cat(logprobs, dim=1).tolist()
    return [
        Sample(
            prompt_ids=tuple(p),
            completion_ids=tuple(c),
            logprobs=tuple(lp),
            reward=reward(c),
            group=g,
            temperature=temperature,
        )
        for p, c, lp, g in zip(prompt_ids, completions, recorded, groups, strict=True)
    ]


def mean_reward(samples: Sequence[Sample]) -> float:
    return sum(s.reward for s in samples) / len(samples)
