"""Sharding the frozen base among data-parallel ranks (FSDP2), for bases one device cannot hold.

With ``shard_base``, each rank keeps ``1/world_size`` of every frozen base weight and
gathers one decoder layer at a time for its forward and backward passes
(``torch.distributed.fsdp.fully_shard``, one unit per decoder layer plus one for the rest).
The trainable parameters — the LoRA weights and the algorithm's heads — are left out of
the sharding (``ignored_params``), so they stay whole, plain tensors on every rank and the
exact micro-batch-ordered gradient sum of :mod:`rl.distributed` applies to them unchanged.
A gathered weight holds the very same values as the whole one, so a sharded run computes
the same numbers as a replicated one: the adapter is the single-process adapter, bit for
bit, whatever the number of ranks.

Only rank 0 needs the real weights: the other ranks may build the model on the ``meta``
device (:func:`rl.worker` does), and after sharding every weight, buffer and LoRA
initialisation is broadcast from rank 0, one tensor at a time, each rank keeping its
shard. Host memory then holds one whole base (rank 0's) instead of one per rank.

The price of sharding is that every forward and backward pass is a collective: all ranks
must run the same number of them. :func:`rl.train.train_step` therefore pads a rank whose
block of micro-batches is shorter with passes whose gradients it throws away (and keeps
running them after a non-finite loss, so no rank is left waiting).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from rl.errors import RLConfigError, RLError

__all__ = ["base_bytes", "shard_frozen_base"]


def shard_frozen_base(
    model: torch.nn.Module, trainable: Iterable[torch.nn.Parameter], device: str
) -> int:
    """Shard ``model``'s frozen weights over the initialised process group, in place.

    ``trainable`` (all the parameters that require grad) are left whole. Rank 0's
    ``model`` must hold real weights; another rank's may be on ``meta``: every rank ends
    with rank 0's values, its shards and the whole trainable tensors on ``device`` (each
    rank's own CUDA device, or CPU). Returns how many sharding units were made. Raises
    RLConfigError without a process group of several ranks.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        raise RLConfigError("shard_base needs a process group of several ranks")
    ignored = set(trainable)
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p not in ignored]
    if missing:
        raise RLConfigError(f"shard_base: trainable parameter {missing[0]} is not in trainable")
    rank = torch.distributed.get_rank()
    on_meta = any(t.is_meta for _, t in _named_tensors(model))
    if rank == 0 and on_meta:
        raise RLError("shard_base: rank 0 must hold the base's real weights, not meta tensors")
    target = torch.device(device)
    whole = dict(_named_tensors(model)) if rank == 0 else {}  # kept alive past sharding
    if not on_meta:
        for p in ignored:
            p.data = p.data.to(target)
    mesh = init_device_mesh(target.type, (torch.distributed.get_world_size(),))
    units = _decoder_layers(model)
    for layer in units:
        fully_shard(layer, mesh=mesh, ignored_params=ignored)
    fully_shard(model, mesh=mesh, ignored_params=ignored)  # embeddings, final norm, head
    if on_meta:
        model.to_empty(device=target)
    _broadcast_from_rank0(model, whole, target)
    return len(units) + 1


def base_bytes(model: torch.nn.Module) -> int:
    """Bytes of frozen parameters resident on this rank (its shards when sharded)."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor's own shard
        total += local.numel() * local.element_size()
    return total


def _named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters (tied ones once) then buffers, in the same order on every rank."""
    yield from model.named_parameters()
    yield from model.named_buffers()


@torch.no_grad()
def _broadcast_from_rank0(
    model: torch.nn.Module, whole: dict[str, torch.Tensor], device: torch.device
) -> None:
    """Give every rank rank 0's values: whole tensors whole, sharded ones as its shard.

    One tensor in flight at a time, so no rank ever holds more than one whole weight
    beyond its shards.
    """
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    for name, tensor in _named_tensors(model):
        sharded = hasattr(tensor, "to_local")
        if rank == 0:
            buffer = whole[name].to(device)
        else:
            buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
        torch.distributed.broadcast(buffer, src=0)
        if rank == 0:
            continue  # its shards were cut from these very values
        if not sharded:
            tensor.copy_(buffer)
            continue
        local = tensor.to_local()
        pieces = buffer.chunk(size, dim=0)  # FSDP2's Shard(0): torch.chunk's split
        piece = pieces[rank] if rank < len(pieces) else buffer[:0]
        if piece.shape != local.shape:
            raise RLError(
                f"shard_base: {name} shard is {tuple(local.shape)}, not {tuple(piece.shape)}"
            )
        local.copy_(piece)


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks transformers names as not to be split (``_no_split_modules``).

    Without them (an unknown architecture) the whole model is one unit: still sharded at
    rest, but gathered whole for every pass.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]
