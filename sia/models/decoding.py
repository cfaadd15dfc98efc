"""The decode loops behind :class:`~sia.models.hf_backend.HFPolicy`.

Two loops share one contract: decode the waiting rows, at most ``max_batch`` at a time,
asking ``refill(room)`` for more between forward passes and calling ``report(row)`` as each
row finishes.

``decode_packed`` (the default) keeps every running row's keys and values in **one**
sequence of the KV cache. Each forward pass takes, back to back, the next token of every
running row and the whole prompt of every row that joins, with explicit rotary positions
and a 4D mask that lets a token see only its own row's earlier tokens. A request joining a
running batch is thus prefilled inside the decode step instead of in a forward pass of its
own; on a CPU that pass costs about as much as a decode step of the whole batch, whatever
its length.

``decode_padded`` is the fallback for models that cannot be packed (sliding-window or
hybrid caches, attention kernels without arbitrary masks): rows are left-padded into one
batch, and rows waiting to start do so once the batch has drained.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from sia.models.generation import FinishReason, GenRequest
from sia.models.sampling import next_tokens

__all__ = ["Row", "decode_packed", "decode_padded", "packable"]

#: Attention implementations that apply an explicit additive 4D mask as given.
_MASKED_ATTENTION = frozenset({"sdpa", "eager"})
_PACKED_SDPA = "sia-packed-sdpa"


def _packed_sdpa(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    dropout: float = 0.0,
    scaling: float | None = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """Attention for packed forwards: torch's grouped-query SDPA under the packed mask.

    query (1, H, n, D); key, value (1, H_kv, T, D); attention_mask (1, 1, n, T). With a mask
    given, transformers' own SDPA copies every key/value head group-many times per layer
    (``repeat_kv``) over the whole packed cache; torch shares them instead.
    """
    output = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return output.transpose(1, 2).contiguous(), None  # (1, n, H, D)


AttentionInterface.register(_PACKED_SDPA, _packed_sdpa)


@contextlib.contextmanager
def _packed_attention(model: Any) -> Iterator[None]:
    """Route ``model``'s SDPA attention through :func:`_packed_sdpa` for the duration."""
    config = model.config
    original = config._attn_implementation
    if original != "sdpa":
        yield
        return
    config._attn_implementation = _PACKED_SDPA
    try:
        yield
    finally:
        config._attn_implementation = original


@dataclass
class Row:
    """Decoding state of one request."""

    request: GenRequest
    prompt_ids: list[int]
    budget: int
    seed: int | None
    generator: torch.Generator | None
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    text: str | None = None
    done: bool = False
    index: int = -1  # arrival order in a continuous run


Advance = Callable[[Row, int, float], None]
Refill = Callable[[int], None]
Report = Callable[[Row], None]


def packable(model: Any) -> bool:
    """Whether ``model`` can decode packed: full attention everywhere, masks applied as given."""
    config = model.config
    if getattr(config, "_attn_implementation", None) not in _MASKED_ATTENTION:
        return False
    if getattr(config, "sliding_window", None) is not None:
        return False
    layer_types = getattr(config, "layer_types", None)
    return layer_types is None or all(kind == "full_attention" for kind in layer_types)


def _sample(rows: Sequence[Row], logits: torch.Tensor, advance: Advance) -> list[int]:
    """Pick and record each row's next token; returns the tokens. logits: (B, V)."""
    device = logits.device
    temperature = torch.tensor([row.request.temperature for row in rows], device=device)
    top_p = torch.tensor([row.request.top_p for row in rows], device=device)
    tokens, logprobs = next_tokens(logits, temperature, top_p, [row.generator for row in rows])
    picked = tokens.tolist()
    for row, token, logprob in zip(rows, picked, logprobs.tolist(), strict=True):
        advance(row, token, logprob)
    return picked


# ---- packed ---------------------------------------------------------------------------------


@dataclass
class _Running:
    row: Row
    uid: int  # owner id of this row's cache positions
    position: int  # rotary position of the row's next input token


class _PackedCache:
    """Every running row's keys and values, interleaved in one cached sequence.

    ``owner`` (T,) names the row each cached position belongs to; positions of finished
    rows become -1 and are dropped before the next forward pass: every query attends over
    the whole cache, so dead positions would cost every later step.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.cache: Any = None
        self.owner = torch.empty(0, dtype=torch.long, device=device)
        self.dtype = dtype
        self.freed = False  # rows finished since the last compaction

    def free(self, uid: int) -> None:
        self.owner[self.owner == uid] = -1
        self.freed = True

    def compact(self) -> None:
        if not self.freed or self.cache is None:
            return
        self.freed = False
        live = self.owner >= 0
        kept = int(live.sum())
        if kept == 0:
            self.cache, self.owner = None, self.owner[:0]
            return
        index = live.nonzero().squeeze(-1)  # (kept,)
        for layer in self.cache.layers:
            # (1, heads, T, head_dim): the sequence is dim 2.
            layer.keys = layer.keys.index_select(2, index)
            layer.values = layer.values.index_select(2, index)
        self.owner = self.owner[index]

    def mask(self, new_owner: torch.Tensor) -> torch.Tensor:
        """Additive mask (1, 1, n, T + n) for ``n`` new tokens owned by ``new_owner`` (n,).

        A new token sees its own row's cached tokens and its row's new tokens up to itself;
        one row's new tokens are contiguous, so "up to itself" is plain causality.
        """
        n = new_owner.numel()
        keys = torch.cat([self.owner, new_owner])  # (T + n,)
        allowed = keys.unsqueeze(0) == new_owner.unsqueeze(-1)  # (n, T + n)
        past = self.owner.numel()
        allowed[:, past:] &= torch.ones(n, n, dtype=torch.bool, device=keys.device).tril()
        self.owner = keys
        mask = torch.zeros(n, past + n, dtype=self.dtype, device=keys.device)
        return mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)[None, None]


def decode_packed(
    model: Any,
    waiting: list[Row],
    *,
    max_batch: int,
    advance: Advance,
    stats: dict[str, int],
    refill: Refill | None = None,
    report: Report | None = None,
) -> None:
    """Decode ``waiting`` (and whatever ``refill`` adds) with one packed forward per step."""
    embedding = model.get_input_embeddings().weight
    device = embedding.device
    packed = _PackedCache(embedding.dtype, device)
    uids = itertools.count()
    running: list[_Running] = []
    logits: torch.Tensor | None = None  # (B, V): next-token scores of ``running``
    while True:
        ids: list[int] = []
        positions: list[int] = []
        owners: list[int] = []
        survivors: list[_Running] = []
        if running and logits is not None:
            picked = _sample([slot.row for slot in running], logits, advance)
            for slot, token in zip(running, picked, strict=True):
                if slot.row.done:
                    packed.free(slot.uid)
                    if report is not None:
                        report(slot.row)
                    continue
                survivors.append(slot)
                ids.append(token)
                positions.append(slot.position)
                owners.append(slot.uid)
                slot.position += 1
        room = max_batch - len(survivors)
        if refill is not None and room > len(waiting):
            refill(room - len(waiting))
        joiners = [_Running(row, next(uids), len(row.prompt_ids)) for row in waiting[:room]]
        del waiting[: len(joiners)]
        if not survivors and not joiners:
            return
        for slot in joiners:
            ids.extend(slot.row.prompt_ids)
            positions.extend(range(len(slot.row.prompt_ids)))
            owners.extend([slot.uid] * len(slot.row.prompt_ids))
        running = survivors + joiners
        # The logits that matter: each row's last new token (survivors: one token each).
        ends, offset = list(range(len(survivors))), len(survivors)
        for slot in joiners:
            offset += len(slot.row.prompt_ids)
            ends.append(offset - 1)
        packed.compact()
        mask = packed.mask(torch.tensor(owners, device=device))
        with _packed_attention(model):
            output = model(
                input_ids=torch.tensor([ids], device=device),  # (1, n)
                attention_mask=mask,  # (1, 1, n, T + n)
                position_ids=torch.tensor([positions], device=device),  # (1, n)
                past_key_values=packed.cache,
                use_cache=True,
                logits_to_keep=torch.tensor(ends, device=device),
            )
        packed.cache = output.past_key_values
        logits = output.logits[0]  # (B, V)
        if joiners:
            stats["prefills"] += 1
            stats["prefill_rows"] += len(joiners)
        if survivors:
            stats["steps"] += 1
            stats["step_rows"] += len(survivors)


# ---- padded ---------------------------------------------------------------------------------


def decode_padded(
    model: Any,
    waiting: list[Row],
    *,
    max_batch: int,
    pad_id: int,
    advance: Advance,
    stats: dict[str, int],
    refill: Refill | None = None,
    report: Report | None = None,
) -> None:
    """Decode ``waiting`` in left-padded batches; new rows start once a batch has drained."""
    device = model.get_input_embeddings().weight.device
    while True:
        if refill is not None and max_batch > len(waiting):
            refill(max_batch - len(waiting))
        if not waiting:
            return
        rows = waiting[:max_batch]
        del waiting[:max_batch]
        width = max(len(row.prompt_ids) for row in rows)
        padded = [[pad_id] * (width - len(row.prompt_ids)) + row.prompt_ids for row in rows]
        mask = [[0] * (width - len(row.prompt_ids)) + [1] * len(row.prompt_ids) for row in rows]
        attention = torch.tensor(mask, dtype=torch.long, device=device)  # (B, L)
        # Left padding shifts each row; positions count real tokens only, so a padded row
        # sees the same rotary positions it would unpadded.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        output = model(
            input_ids=torch.tensor(padded, dtype=torch.long, device=device),  # (B, L)
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        stats["prefills"] += 1
        stats["prefill_rows"] += len(rows)
        cache, logits, positions = output.past_key_values, output.logits[:, -1], positions[:, -1]
        while True:
            tokens = torch.tensor(_sample(rows, logits, advance), device=device)  # (B,)
            keep = [slot for slot, row in enumerate(rows) if not row.done]
            if report is not None:
                for row in rows:
                    if row.done:
                        report(row)
            if not keep:
                break
            if len(keep) < len(rows):
                # Finished rows leave the batch so long stragglers do not pay for them.
                selector = torch.tensor(keep, device=device)
                cache.batch_select_indices(selector)
                rows = [rows[slot] for slot in keep]
                tokens, attention = tokens[selector], attention[selector]
                positions = positions[selector]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=-1)
            positions = positions + 1
            output = model(
                input_ids=tokens.unsqueeze(-1),  # (B', 1)
                attention_mask=attention,  # (B', T + 1)
                position_ids=positions.unsqueeze(-1),  # (B', 1)
                past_key_values=cache,
                use_cache=True,
            )
            stats["steps"] += 1
            stats["step_rows"] += len(rows)
            cache, logits = output.past_key_values, output.logits[:, -1]
