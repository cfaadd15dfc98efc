import math

import pytest
import torch

from sia.models.sampling import next_tokens, nucleus_mask, sampling_logprobs

PROBS = torch.tensor([[0.5, 0.3, 0.15, 0.05]])


def logits_of(probs: torch.Tensor) -> torch.Tensor:
    return probs.log()


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [
        (0.45, [True, False, False, False]),
        (0.79, [True, True, False, False]),
        (0.81, [True, True, True, False]),
        (1.0, [True, True, True, True]),
        (0.01, [True, False, False, False]),
    ],
)
def test_nucleus_mask_keeps_the_smallest_top_set_reaching_top_p(top_p, kept):
    # Thresholds sit off the exact cumulative sums (0.5, 0.8, 0.95), where float rounding
    # of log/exp decides either way.
    mask = nucleus_mask(PROBS.log(), torch.tensor([top_p]))
    assert mask.tolist() == [kept]


def test_nucleus_mask_works_on_unsorted_rows():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    mask = nucleus_mask(probs.log(), torch.tensor([0.79]))
    assert mask.tolist() == [[False, True, False, True]]


def test_sampling_logprobs_per_row_semantics():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]] * 3)
    temperature = torch.tensor([0.0, 2.0, 1.0])
    top_p = torch.tensor([0.5, 1.0, 1.0])
    out = sampling_logprobs(logits, temperature, top_p)
    # Greedy ignores top_p and reports the raw log-softmax.
    torch.testing.assert_close(out[0], torch.log_softmax(logits[0], -1))
    torch.testing.assert_close(out[1], torch.log_softmax(logits[1] / 2, -1))
    torch.testing.assert_close(out[2], torch.log_softmax(logits[2], -1))


def test_sampling_logprobs_renormalises_inside_the_nucleus():
    out = sampling_logprobs(logits_of(PROBS), torch.tensor([1.0]), torch.tensor([0.79]))
    assert out[0, 0].item() == pytest.approx(math.log(0.5 / 0.8), abs=1e-6)
    assert out[0, 1].item() == pytest.approx(math.log(0.3 / 0.8), abs=1e-6)
    assert out[0, 2:].tolist() == [-math.inf, -math.inf]


def test_greedy_takes_the_first_maximum_and_its_raw_logprob():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    tokens, logprobs = next_tokens(logits, torch.tensor([0.0]), torch.tensor([1.0]), [None])
    assert tokens.tolist() == [1]
    assert logprobs.item() == pytest.approx(torch.log_softmax(logits, -1)[0, 1].item())


def test_an_all_greedy_batch_scores_like_a_mixed_one():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(3)) * 4
    greedy = torch.zeros(3)
    tokens, fast = next_tokens(logits, greedy, torch.ones(3), [None] * 3)
    mixed = torch.tensor([0.0, 0.0, 0.0, 1.0])
    rows = torch.cat([logits, logits[:1]])
    generators = [None, None, None, torch.Generator().manual_seed(0)]
    same_tokens, general = next_tokens(rows, mixed, torch.ones(4), generators)
    assert same_tokens[:3].tolist() == tokens.tolist() == logits.argmax(-1).tolist()
    assert fast.tolist() == pytest.approx(general[:3].tolist(), abs=1e-6)
    reference = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert fast.tolist() == pytest.approx(reference.tolist(), abs=1e-6)


def test_sampling_is_reproducible_per_generator_and_stays_in_the_nucleus():
    logits = logits_of(PROBS).repeat(2, 1)
    temperature, top_p = torch.tensor([1.0, 1.0]), torch.tensor([0.79, 0.79])

    def draw(seed: int) -> list[int]:
        generators = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)]
        drawn = []
        for _ in range(200):
            tokens, logprobs = next_tokens(logits, temperature, top_p, generators)
            assert tokens[0] == tokens[1]
            expected = math.log((0.5 if tokens[0] == 0 else 0.3) / 0.8)
            assert logprobs[0].item() == pytest.approx(expected, abs=1e-6)
            drawn.append(int(tokens[0]))
        return drawn

    first = draw(3)
    assert first == draw(3)
    assert first != draw(4)
    assert set(first) == {0, 1}


def test_a_sampled_row_without_a_generator_is_a_bug():
    with pytest.raises(ValueError, match="no generator"):
        next_tokens(PROBS.log(), torch.tensor([1.0]), torch.tensor([1.0]), [None])


def test_sampled_frequencies_follow_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.0, 0.15, 0.05]])
    generator = torch.Generator().manual_seed(0)
    counts = [0] * 5
    draws = 4000
    for _ in range(draws):
        tokens, _ = next_tokens(probs.log(), torch.tensor([1.0]), torch.tensor([1.0]), [generator])
        counts[int(tokens[0])] += 1
    assert counts[2] == 0
    for count, p in zip(counts, probs[0].tolist(), strict=True):
        # Four standard deviations of a binomial count.
        assert abs(count / draws - p) <= 4 * math.sqrt(p * (1 - p) / draws) + 1e-9
