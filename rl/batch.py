"""Samples as padded tensors, and moving per-token values between samples and batches.

Layout. Row ``i`` holds ``prompt + completion`` of sample ``i``, right-padded to length
``T`` (right padding keeps Llama-style default position ids correct without passing them).
Logits at position ``t`` predict token ``t + 1``, so the targets are ``input_ids[:, 1:]``.
Prompt targets are never trained, so every per-token tensor covers only the *window*
``t in [offset, T - 1)`` with ``offset = shortest prompt - 1``: the model is asked for
``W + 1 = T - offset`` logits (``logits_to_keep``) instead of ``T``, which on a 49k-token
vocabulary saves most of the output projection for the prompt part.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rl.data import Sample

__all__ = ["TokenBatch", "collate"]


@dataclass(frozen=True)
class TokenBatch:
    """Padded token ids plus per-target-token tensors over the window (see module doc).

    ``B`` rows, ``T`` positions, ``W = T - 1 - offset`` target positions.
    """

    input_ids: torch.Tensor  # (B, T) int64, right-padded
    attention_mask: torch.Tensor  # (B, T) int64, 1 on real tokens
    offset: int  # window start: window column j predicts input_ids[:, offset + j + 1]
    targets: torch.Tensor  # (B, W) int64 = input_ids[:, offset + 1 :]
    mask: torch.Tensor  # (B, W) bool, True where the target is a trained completion token
    completion: torch.Tensor  # (B, W) bool, True where the target is any completion token
    old_logprobs: torch.Tensor  # (B, W) float32, recorded logprobs at completion targets, else 0
    temperature: torch.Tensor  # (B,) float32, greedy's 0 already read as 1
    rewards: torch.Tensor  # (B,) float32
    starts: tuple[int, ...]  # per row: window column of the first completion target
    lengths: tuple[int, ...]  # per row: number of completion tokens

    @property
    def width(self) -> int:
        return self.targets.shape[1]

    def place(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-sample completion-aligned 1-D tensors → one (B, W) tensor, 0 elsewhere."""
        out = torch.zeros(self.targets.shape, dtype=values[0].dtype, device=self.targets.device)
        for row, (start, length, value) in enumerate(
            zip(self.starts, self.lengths, values, strict=True)
        ):
            out[row, start : start + length] = value.to(out.device)
        return out

    def split(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """A (B, W) tensor → per-sample 1-D tensors over each completion (inverse of place)."""
        return [
            tensor[row, start : start + length]
            for row, (start, length) in enumerate(zip(self.starts, self.lengths, strict=True))
        ]


def collate(
    samples: Sequence[Sample], pad_id: int, device: str | torch.device = "cpu"
) -> TokenBatch:
    """Pad ``samples`` into a :class:`TokenBatch` on ``device``."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    total = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    offset = min(len(s.prompt_ids) for s in samples) - 1
    width = total - 1 - offset
    rows = len(samples)
    input_ids = torch.full((rows, total), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, total), dtype=torch.long)
    mask = torch.zeros((rows, width), dtype=torch.bool)
    completion = torch.zeros((rows, width), dtype=torch.bool)
    old = torch.zeros((rows, width), dtype=torch.float32)
    starts, lengths = [], []
    for row, sample in enumerate(samples):
        ids = sample.prompt_ids + sample.completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
        # Completion token k sits at position P + k and is predicted from P + k - 1.
        start = len(sample.prompt_ids) - 1 - offset
        length = len(sample.completion_ids)
        mask[row, start : start + length] = torch.tensor(sample.trained, dtype=torch.bool)
        completion[row, start : start + length] = True
        old[row, start : start + length] = torch.tensor(sample.logprobs, dtype=torch.float32)
        starts.append(start)
        lengths.append(length)
    return TokenBatch(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        offset=offset,
        targets=input_ids[:, offset + 1 :].to(device),
        mask=mask.to(device),
        completion=completion.to(device),
        old_logprobs=old.to(device),
        temperature=torch.tensor([s.scale for s in samples], dtype=torch.float32).to(device),
        rewards=torch.tensor([float(s.reward) for s in samples], dtype=torch.float32).to(device),
        starts=tuple(starts),
        lengths=tuple(lengths),
    )
