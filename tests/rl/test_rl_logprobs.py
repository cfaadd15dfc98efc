"""Batch layout and per-token logprobs: against naive loops and the sampler's records."""

import copy

import pytest
import torch

from rl.batch import collate
from rl.data import Sample
from rl.logprobs import (
    _local_selective_log_softmax,
    model_logprobs,
    selective_log_softmax,
    token_logprobs,
)
from sia.models.tiny import build_tiny
from tests.rl.rl_support import sample


def make(prompt, completion, mask=None, temperature=1.0):
    return Sample(
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=[-float(i + 1) for i in range(len(completion))],
        reward=0.0,
        group="g",
        temperature=temperature,
        completion_mask=mask,
    )


def test_collate_layout_by_hand():
    a = make([1, 2, 3], [4, 5], mask=[True, False])
    b = make([6], [7, 8, 9], temperature=0.0)
    batch = collate([a, b], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # Shortest prompt has 1 token: the window starts at position 0 and predicts ids[1:].
    assert batch.offset == 0
    assert batch.targets.tolist() == [[2, 3, 4, 5], [7, 8, 9, 0]]
    assert batch.mask.tolist() == [[False, False, True, False], [True, True, True, False]]
    assert batch.completion.tolist() == [[False, False, True, True], [True, True, True, False]]
    assert batch.old_logprobs.tolist() == [[0, 0, -1, -2], [-1, -2, -3, 0]]
    assert batch.temperature.tolist() == [1.0, 1.0]  # greedy's 0 read as 1
    assert batch.starts == (2, 0) and batch.lengths == (2, 3)
    values = [torch.tensor([10.0, 11.0]), torch.tensor([20.0, 21.0, 22.0])]
    placed = batch.place(values)
    assert placed.tolist() == [[0, 0, 10, 11], [20, 21, 22, 0]]
    assert [v.tolist() for v in batch.split(placed)] == [[10, 11], [20, 21, 22]]


def test_collate_crops_common_prompt_prefix():
    batch = collate([make([1, 2, 3, 4], [5]), make([1, 2, 3], [6, 7])], pad_id=0)
    assert batch.offset == 2  # the first 2 positions predict prompt tokens only
    assert batch.targets.tolist() == [[4, 5], [6, 7]]
    assert batch.mask.tolist() == [[False, True], [True, True]]


def naive_logprobs(logits, targets, temperature):
    out = torch.zeros(targets.shape)
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            row = logits[b, t] / temperature[b]
            out[b, t] = row[targets[b, t]] - torch.log(torch.exp(row).sum())
    return out


def test_selective_log_softmax_matches_naive():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g) * 4
    targets = torch.randint(11, (3, 5), generator=g)
    expected = naive_logprobs(logits, targets, torch.ones(3))
    assert torch.allclose(selective_log_softmax(logits, targets), expected, atol=1e-5)
    half = _local_selective_log_softmax(logits.bfloat16(), targets).float()
    assert torch.allclose(half, expected, atol=0.1)
    temperature = torch.tensor([1.0, 0.5, 2.0])
    assert torch.allclose(
        token_logprobs(logits, targets, temperature),
        naive_logprobs(logits, targets, temperature),
        atol=1e-5,
    )


def test_model_logprobs_match_sampler_records_at_any_temperature():
    model, _ = build_tiny(seed=3)
    for temperature in (1.0, 0.7):
        samples = sample(model, group_size=2, new_tokens=5, temperature=temperature, seed=4)
        # Different prompt lengths exercise the cropped window.
        samples.append(
            Sample((1, 2, 3, 4, 5, 6), *_one_more(model, (1, 2, 3, 4, 5, 6), temperature))
        )
        batch = collate(samples, pad_id=256)
        with torch.no_grad():
            logprobs, values = model_logprobs(model, batch)
        assert values is None
        got = logprobs[batch.mask]
        assert torch.allclose(got, batch.old_logprobs[batch.mask], atol=1e-5)


def _one_more(model, prompt, temperature):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1] / temperature
    token = int(logits.argmax())
    logprob = float(torch.log_softmax(logits, -1)[token])
    return (token,), (logprob,), 0.0, "extra", temperature


def test_model_logprobs_equal_full_forward_and_value_head():
    model, _ = build_tiny(seed=3)
    samples = [make([1, 2, 3, 4, 5], [6, 7, 8]), make([9, 10], [11, 12, 13, 14])]
    batch = collate(samples, pad_id=256)
    head = torch.nn.Linear(64, 1)
    with torch.no_grad():
        logprobs, values = model_logprobs(model, batch, tempered=False, value_head=head)
        full = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            output_hidden_states=True,
        )
    logits = full.logits[:, batch.offset : -1]
    expected = naive_logprobs(logits, batch.targets, torch.ones(2))
    assert torch.allclose(logprobs[batch.mask], expected[batch.mask], atol=1e-5)
    hidden = full.hidden_states[-1][:, batch.offset : -1]
    assert torch.allclose(values, head(hidden).squeeze(-1), atol=1e-5)


def test_reference_is_base_with_adapter_disabled():
    from rl.lora import LoraSettings, attach_lora
    from rl.policy import Policy

    base, _ = build_tiny(seed=3)
    plain = copy.deepcopy(base)
    peft_model = attach_lora(base, LoraSettings(rank=4))
    with torch.no_grad():  # make the adapter matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    policy = Policy(peft_model, pad_id=256, device="cpu", micro_batch_size=2)
    samples = [make([1, 2, 3], [4, 5, 6]), make([7, 8], [9]), make([3], [2, 1])]

    def lp(b):
        return policy.logprobs(b)[0]

    reference = policy.per_sample(samples, lp, reference=True)
    adapted = policy.per_sample(samples, lp)
    with torch.no_grad():
        expected = [
            model_logprobs(plain, collate([s], 256))[0][0][-len(s.completion_ids) :]
            for s in samples
        ]
    for ref, exp, ada in zip(reference, expected, adapted, strict=True):
        assert torch.allclose(ref, exp, atol=1e-5)
        assert not torch.allclose(ref, ada, atol=1e-3)
    # The adapter is back on after the reference pass.
    assert not torch.allclose(policy.per_sample(samples, lp)[0], reference[0], atol=1e-3)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_greedy_temperature_reads_as_one(temperature):
    batch = collate([make([1], [2], temperature=temperature)], pad_id=0)
    assert batch.temperature.tolist() == [1.0]
