"""The packed decode loop: its mask and cache bookkeeping against naive references, and its
results against the padded loop and against each request decoded alone."""

import pytest
import torch

from sia.models.decoding import _PackedCache, packable
from sia.models.errors import GenerationError
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny

ATOL = 1e-4


def _naive_allowed(past_owner: list[int], new_owner: list[int]) -> list[list[bool]]:
    keys = past_owner + new_owner
    allowed = []
    for i, owner in enumerate(new_owner):
        query = len(past_owner) + i
        allowed.append([keys[j] == owner and j <= query for j in range(len(keys))])
    return allowed


def test_mask_lets_a_token_see_only_its_own_row_up_to_itself() -> None:
    packed = _PackedCache(torch.float32, torch.device("cpu"))
    past = [0, 0, 1, -1, 1, 2, 2]
    packed.owner = torch.tensor(past)
    new = [0, 1, 2, 3, 3, 3]  # three rows decode one token each, row 3 joins with three
    mask = packed.mask(torch.tensor(new))
    assert mask.shape == (1, 1, len(new), len(past) + len(new))
    got = (mask[0, 0] == 0).tolist()
    assert got == _naive_allowed(past, new)
    assert packed.owner.tolist() == past + new
    blocked = mask[0, 0][mask[0, 0] != 0]
    assert bool((blocked == torch.finfo(torch.float32).min).all())


def test_compaction_keeps_live_positions_in_order() -> None:
    class Layer:
        def __init__(self, length: int) -> None:
            self.keys = torch.arange(length, dtype=torch.float32).view(1, 1, length, 1)
            self.values = -self.keys

    class Cache:
        layers = [Layer(8), Layer(8)]

    packed = _PackedCache(torch.float32, torch.device("cpu"))
    packed.cache = Cache()
    packed.owner = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    packed.compact()  # nothing freed: nothing copied
    assert packed.owner.numel() == 8
    packed.free(1)
    packed.free(3)
    packed.compact()
    assert packed.owner.tolist() == [0, 0, 2, 2]
    for layer in Cache.layers:
        assert layer.keys.flatten().tolist() == [0.0, 1.0, 4.0, 5.0]
        assert layer.values.flatten().tolist() == [-0.0, -1.0, -4.0, -5.0]
    packed.free(0)
    packed.free(2)
    packed.compact()
    assert packed.cache is None and packed.owner.numel() == 0


def _mixed_requests() -> list[GenRequest]:
    requests = []
    for i in range(11):
        sampled = i % 3 == 1
        requests.append(
            GenRequest(
                messages=[{"role": "user", "content": "tell " * (1 + 2 * (i % 5)) + str(i)}],
                max_tokens=3 + 3 * (i % 4),
                temperature=0.9 if sampled else 0.0,
                top_p=0.8 if i % 4 == 1 else 1.0,
                seed=70 + i if sampled else None,
            )
        )
    return requests


def test_packed_and_padded_loops_agree_with_decoding_alone() -> None:
    model, tokenizer = build_tiny(seed=0)
    packed = HFPolicy(model, tokenizer, max_batch_size=4, packed=True)
    padded = HFPolicy(model, tokenizer, max_batch_size=4, packed=False)
    requests = _mixed_requests()
    alone = [padded.generate([request])[0] for request in requests]
    before = packed.decode_stats
    together = packed.generate(requests)
    stats = packed.decode_stats
    # Rows joined running batches: more forward passes admitted rows than the first one.
    assert stats["prefills"] - before["prefills"] > 1
    assert stats["prefill_rows"] - before["prefill_rows"] == len(requests)
    batched = padded.generate(requests)
    for index, expected in enumerate(alone):
        for got in (together[index], batched[index]):
            assert got.completion_ids == expected.completion_ids, index
            assert got.logprobs == pytest.approx(expected.logprobs, abs=ATOL), index
            assert got.finish_reason == expected.finish_reason


def test_packability_follows_the_attention_and_cache_kind() -> None:
    model, tokenizer = build_tiny(seed=0)
    assert packable(model)
    assert HFPolicy(model, tokenizer).packed
    model.config.sliding_window = 4
    assert not packable(model)
    assert not HFPolicy(model, tokenizer).packed
    with pytest.raises(GenerationError, match="cannot decode packed"):
        HFPolicy(model, tokenizer, packed=True)
    model.config.sliding_window = None
    model.config._attn_implementation = "flex_attention"
    assert not packable(model)
