"""The model under training as the algorithms see it: batches, logprobs, the reference.

The reference policy is the base model with the adapter switched off (peft's
``disable_adapter()``), so KL and DPO terms cost a forward pass but no second copy of the
weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

from rl.batch import TokenBatch, collate
from rl.data import Sample
from rl.logprobs import model_logprobs

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["Policy"]


class Policy:
    """A peft model plus what batching needs: pad id, device, micro-batch size."""

    def __init__(
        self, model: PeftModel, pad_id: int, device: str | torch.device, micro_batch_size: int
    ) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = torch.device(device)
        self.micro_batch_size = micro_batch_size

    def batch(self, samples: Sequence[Sample]) -> TokenBatch:
        return collate(samples, self.pad_id, self.device)

    def logprobs(
        self,
        batch: TokenBatch,
        *,
        tempered: bool = True,
        value_head: torch.nn.Module | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Current-policy logprobs (B, W) with grad, and values (B, W) if a head is given."""
        return model_logprobs(self.model, batch, tempered=tempered, value_head=value_head)

    @torch.no_grad()
    def per_sample(
        self,
        samples: Sequence[Sample],
        compute: Callable[[TokenBatch], torch.Tensor],
        *,
        reference: bool = False,
    ) -> list[torch.Tensor]:
        """Run ``compute`` (batch → (B, W)) over ``samples`` in micro-batches, no grad.

        Returns one 1-D tensor per sample, aligned to its completion tokens (on CPU, so a
        whole rollout's worth does not sit on the accelerator). ``reference`` runs with
        the adapter disabled.
        """
        out: list[torch.Tensor] = []
        context = self.model.disable_adapter if reference else nullcontext
        for start in range(0, len(samples), self.micro_batch_size):
            batch = self.batch(samples[start : start + self.micro_batch_size])
            with context():
                values = compute(batch)
            out.extend(v.detach().float().cpu() for v in batch.split(values))
        return out
