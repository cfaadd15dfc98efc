"""Data-parallel training: how one optimiser step is shared among the ranks of a process group.

When ``torch.distributed`` is initialised with more than one process (``torchrun``,
``accelerate launch --multi_gpu``...), every rank runs the same ``train_lora`` call: same
samples, same seed, hence the same LoRA init, the same prepared items and the same
minibatch order. Each step, the single-process trainer cuts the minibatch into
micro-batches and accumulates ``grad += grad(share_c * loss_c)`` with ``share_c =
|chunk_c| / |minibatch|``; here rank ``r`` runs only its contiguous block of those *same*
micro-batches (:meth:`World.chunks`) with the *same* global shares, keeps each
micro-batch's gradient apart, and all ranks gather them and add them up in micro-batch
order (:meth:`World.accumulate_gradients`).

Normalisation, exactly: each micro-batch's loss is normalised within the micro-batch
(per-item means, or token means per micro-batch) and weighted by its item count over the
whole minibatch, so no normaliser crosses ranks and nothing needs all-reducing but the
gradients themselves. And because the additions happen in the single-process order, with
the same float operations, the summed gradient is bit-identical to the single-process one
(an all-reduce would be equal only up to summation order, which AdamW's ``g / sqrt(v)``
amplifies for near-zero gradient entries). Clipping and AdamW then run on identical
gradients on every rank, so the weights stay identical without being broadcast. The price
is an all-gather of one LoRA-sized buffer per micro-batch instead of one all-reduce per
step: a LoRA is a few MB, small next to the forward passes.

A step is only spread over as many ranks as it has micro-batches, so set
``micro_batch_size <= minibatch_size / world_size`` or some ranks idle (``train_lora``
warns). LoRA dropout (off by default) draws from a per-rank stream, so with dropout the
run is valid but not bit-comparable to one process.

Plain ``torch.distributed`` collectives are used rather than wrapping the model with
``accelerate.Accelerator``/DDP: DDP all-reduces during backward (sum order not ours),
divides by the world size, requires every rank to run the same number of backward passes
(a rank may have fewer micro-batches, or none) and would miss the algorithm's heads
(PPO's value head lives outside the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["World", "current_world", "init_from_env", "take_gradients"]


@dataclass(frozen=True)
class World:
    """This process's place among ``size`` data-parallel ranks (``size > 1``).

    ``sharded``: the frozen base is sharded among the ranks (:mod:`rl.sharding`), so every
    forward and backward pass is a collective and all ranks must run as many.
    """

    rank: int
    size: int
    sharded: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the adapter, the record and the result; the others write nothing."""
        return self.rank == 0

    def chunks(self, n_chunks: int) -> range:
        """The micro-batch indices this rank runs: a contiguous block, sizes differing by ≤ 1."""
        return range(self.rank * n_chunks // self.size, (self.rank + 1) * n_chunks // self.size)

    def passes(self, n_chunks: int) -> int:
        """How many forward/backward passes this rank runs in a step of ``n_chunks``.

        Its own block, or with a sharded base the largest block: a rank with fewer
        micro-batches pads with passes whose gradients it discards.
        """
        return -(-n_chunks // self.size) if self.sharded else len(self.chunks(n_chunks))

    def accumulate_gradients(
        self,
        params: Sequence[torch.nn.Parameter],
        local: Sequence[Sequence[torch.Tensor | None]],
        n_chunks: int,
    ) -> None:
        """Set every rank's ``p.grad`` to the sum of all micro-batches' gradients, in order.

        ``local[i][j]`` is parameter ``j``'s gradient from this rank's ``i``-th micro-batch
        (None if it got none), for the block :meth:`chunks` gave it out of ``n_chunks``.
        The sum is ``((g_0 + g_1) + g_2) + ...`` in micro-batch order, as autograd's
        accumulation forms it in one process; a parameter no micro-batch reached keeps
        ``grad = None``, so AdamW skips it the same way. One all-gather per dtype.
        """
        rows = -(-n_chunks // self.size)  # the largest block: ceil(n_chunks / size)
        counts = [len(World(rank, self.size).chunks(n_chunks)) for rank in range(self.size)]
        groups: dict[torch.dtype, list[int]] = {}
        for index, p in enumerate(params):
            groups.setdefault(p.dtype, []).append(index)
        for dtype, members in groups.items():
            sizes = [params[j].numel() for j in members]
            flags = sum(sizes)  # the row holds the gradients, then one presence flag each
            mine = torch.zeros(
                (rows, flags + len(members)), dtype=dtype, device=params[members[0]].device
            )  # (rows, width): this rank's micro-batches, zero-padded to the largest block
            for row, grads in enumerate(local):
                offset = 0
                for flag, (j, size) in enumerate(zip(members, sizes, strict=True)):
                    if grads[j] is not None:
                        mine[row, offset : offset + size] = grads[j].reshape(-1)
                        mine[row, flags + flag] = 1
                    offset += size
            everyone = [torch.empty_like(mine) for _ in range(self.size)]
            torch.distributed.all_gather(everyone, mine)
            ordered = [
                block[row]
                for block, count in zip(everyone, counts, strict=True)
                for row in range(count)
            ]  # n_chunks rows of (width,), in micro-batch order
            total = ordered[0].clone()
            for row in ordered[1:]:
                total += row  # elementwise, as autograd's accumulation adds
            present = (torch.stack(ordered)[:, flags:] > 0).any(0).tolist()  # (len(members),)
            offset = 0
            for j, size, reached in zip(members, sizes, present, strict=True):
                params[j].grad = (
                    total[offset : offset + size].view_as(params[j]) if reached else None
                )
                offset += size

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every rank, in rank order (small picklable objects only)."""
        out: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(out, value)
        return out


def take_gradients(params: Sequence[torch.nn.Parameter]) -> list[torch.Tensor | None]:
    """The parameters' gradients, detached from them (``grad`` is None afterwards).

    A rank keeps each micro-batch's gradient apart so that the ranks can add all of them in
    micro-batch order (:meth:`World.accumulate_gradients`).
    """
    grads = [p.grad for p in params]
    for p in params:
        p.grad = None
    return grads


def current_world() -> World | None:
    """The data-parallel world of this process, or None when training in one process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    size = torch.distributed.get_world_size()
    return World(torch.distributed.get_rank(), size) if size > 1 else None


def init_from_env(device: str = "cpu") -> World | None:
    """Join the process group a launcher described in the environment, if any.

    ``torchrun`` and ``accelerate launch`` set ``WORLD_SIZE``, ``RANK`` and
    ``MASTER_ADDR``/``MASTER_PORT``; without them (or with one process) this is a no-op and
    training runs in one process. gloo on CPU, nccl on CUDA.
    """
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    return current_world()
