"""Losses against hand-computed values and naive per-token loops."""

import math

import pytest
import torch

from rl.losses import (
    bc_loss,
    clipped_surrogate,
    dpo_loss,
    grpo_loss,
    k3_kl,
    masked_mean,
    ppo_loss,
    reinforce_kl_loss,
    sequence_logprobs,
    value_loss,
)


def random_case(seed=0, rows=4, width=7):
    g = torch.Generator().manual_seed(seed)
    logprobs = -torch.rand(rows, width, generator=g) * 3
    old = logprobs + 0.3 * torch.randn(rows, width, generator=g)
    ref = logprobs + 0.3 * torch.randn(rows, width, generator=g)
    mask = torch.rand(rows, width, generator=g) < 0.7
    mask[:, 0] = True
    return logprobs, old, ref, mask


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_masked_mean_token_and_sequence():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[True, True, True], [True, False, False], [False, False, False]])
    assert float(masked_mean(values, mask)) == pytest.approx(16 / 4)
    # Rows with no masked token do not count as a sequence.
    assert float(masked_mean(values, mask, "sequence")) == pytest.approx((2.0 + 10.0) / 2)


def test_clipped_surrogate_hand_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5]]))
    adv = torch.tensor([[1.0, 1.0, -2.0, -2.0]])
    out = clipped_surrogate(new, old, adv, clip_eps=0.2)
    # A > 0: min(1.5, 1.2) = 1.2; min(0.5, 0.8) = 0.5. A < 0: min(-2.2, -2.2); min(-1.0, -1.6).
    assert out.tolist()[0] == pytest.approx([-1.2, -0.5, 2.2, 1.6])


def test_clipped_tokens_get_no_gradient():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    clipped_surrogate(new, old, torch.ones(1, 2), 0.2).sum().backward()
    assert new.grad.tolist()[0] == pytest.approx([0.0, -1.1])  # d(-r)/dlogp = -r


def test_ppo_loss_matches_naive_loop():
    logprobs, old, _, mask = random_case()
    adv = torch.randn(logprobs.shape, generator=torch.Generator().manual_seed(1))
    total, count = 0.0, 0
    for b in range(logprobs.shape[0]):
        for t in range(logprobs.shape[1]):
            if mask[b, t]:
                r = math.exp(float(logprobs[b, t] - old[b, t]))
                a = float(adv[b, t])
                total += -min(r * a, min(max(r, 0.8), 1.2) * a)
                count += 1
    assert float(ppo_loss(logprobs, old, adv, mask, 0.2)) == pytest.approx(total / count, rel=1e-5)


def test_value_loss_plain_and_clipped():
    values = torch.tensor([[1.0, 3.0, 9.0]])
    returns = torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    assert float(value_loss(values, returns, mask)) == pytest.approx(0.5 * (1 + 4) / 2)
    old = torch.tensor([[0.5, 2.8, 0.0]])
    # Clipped values 0.7 and 3.0 err by 0.49 and 4, no more than the unclipped 1 and 4.
    assert float(value_loss(values, returns, mask, old, clip=0.2)) == pytest.approx(1.25)
    # A new value 0 clipped towards old 2.0 becomes 1.8: the larger error wins.
    values2 = torch.tensor([[0.0]])
    old2 = torch.tensor([[2.0]])
    returns2 = torch.tensor([[0.0]])
    m = torch.tensor([[True]])
    assert float(value_loss(values2, returns2, m, old2, clip=0.2)) == pytest.approx(0.5 * 1.8**2)


def test_k3_hand_values():
    logprobs = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.2)])
    # exp(ref - logp) - (ref - logp) - 1 with ratio ref/p = 0.5: 0.5 - ln 0.5 - 1.
    assert k3_kl(logprobs, ref).tolist() == pytest.approx([0.5 - math.log(0.5) - 1, 0.0])
    assert (k3_kl(*random_case()[:2]) >= 0).all()


@pytest.mark.parametrize("how", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_grpo_loss_matches_naive_loop(how, beta):
    logprobs, old, ref, mask = random_case(seed=2)
    adv = torch.tensor([1.0, -0.5, 0.0, 2.0])
    rows = []
    for b in range(logprobs.shape[0]):
        terms = []
        for t in range(logprobs.shape[1]):
            if not mask[b, t]:
                continue
            r = math.exp(float(logprobs[b, t] - old[b, t]))
            a = float(adv[b])
            term = -min(r * a, min(max(r, 0.8), 1.2) * a)
            d = float(ref[b, t] - logprobs[b, t])
            term += beta * (math.exp(d) - d - 1)
            terms.append(term)
        rows.append(terms)
    if how == "token":
        expected = sum(map(sum, rows)) / sum(map(len, rows))
    else:
        expected = sum(sum(r) / len(r) for r in rows) / len(rows)
    got = grpo_loss(logprobs, old, adv, mask, 0.2, ref_logprobs=ref, beta=beta, how=how)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_grpo_loss_needs_reference_for_kl():
    logprobs, old, _, mask = random_case()
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logprobs, old, torch.zeros(4), mask, beta=0.1)


def test_reinforce_kl_on_policy_gradient_is_plain_reinforce():
    logprobs, _, ref, mask = random_case(seed=3)
    adv = torch.tensor([1.0, -1.0, 0.5, 0.0])
    new = logprobs.clone().requires_grad_()
    # On policy (old == new) and beta 0: gradient is -A / n on each masked token.
    reinforce_kl_loss(new, logprobs, adv, mask, ref, beta=0.0).backward()
    n = mask.sum()
    expected = torch.where(mask, -adv[:, None] / n, torch.zeros_like(logprobs))
    assert torch.allclose(new.grad, expected)


def test_reinforce_kl_matches_naive_loop():
    logprobs, old, ref, mask = random_case(seed=4)
    adv = torch.tensor([1.0, -1.0, 0.5, 2.0])
    total, count = 0.0, 0
    for b in range(4):
        for t in range(7):
            if mask[b, t]:
                lp = float(logprobs[b, t])
                w = min(math.exp(lp - float(old[b, t])), 2.0)
                d = float(ref[b, t]) - lp
                total += -w * float(adv[b]) * lp + 0.05 * (math.exp(d) - d - 1)
                count += 1
    got = reinforce_kl_loss(logprobs, old, adv, mask, ref, beta=0.05, is_cap=2.0)
    assert float(got) == pytest.approx(total / count, rel=1e-5)


def test_sequence_logprobs():
    logprobs = torch.tensor([[-1.0, -2.0, -4.0]])
    assert sequence_logprobs(logprobs, torch.tensor([[True, False, True]])).tolist() == [-5.0]


def test_dpo_loss_hand_values():
    chosen = torch.tensor([-10.0, -5.0])
    rejected = torch.tensor([-12.0, -4.0])
    ref_chosen = torch.tensor([-11.0, -5.0])
    ref_rejected = torch.tensor([-11.0, -5.0])
    # z = 0.5 * ((1) - (-1)) = 1 for pair 0; z = 0.5 * (0 - 1) = -0.5 for pair 1.
    expected = (-math.log(sig(1.0)) - math.log(sig(-0.5))) / 2
    got = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    assert float(got) == pytest.approx(expected)
    smoothed = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5, label_smoothing=0.1)
    expected_smoothed = (
        sum(-0.9 * math.log(sig(z)) - 0.1 * math.log(sig(-z)) for z in (1.0, -0.5)) / 2
    )
    assert float(smoothed) == pytest.approx(expected_smoothed)
    # Policy == reference: log 2, whatever beta.
    same = dpo_loss(ref_chosen, ref_rejected, ref_chosen, ref_rejected, beta=3.0)
    assert float(same) == pytest.approx(math.log(2))


def test_bc_loss_is_masked_nll():
    logprobs = torch.tensor([[-1.0, -3.0, -9.0], [-2.0, -2.0, -2.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert float(bc_loss(logprobs, mask)) == pytest.approx((1 + 3 + 2) / 3)
    assert float(bc_loss(logprobs, mask, "sequence")) == pytest.approx((2 + 2) / 2)
