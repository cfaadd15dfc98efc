"""Advantage estimators against hand-computed values and naive loops."""

import math

import pytest
import torch

from rl.advantages import (
    entropic_advantages,
    entropic_weights,
    gae,
    group_mean,
    group_normalized_advantages,
    whiten,
)


def naive_gae(rewards, values, mask, gamma, lam):
    """Textbook GAE over each row's masked steps, one Python float at a time."""
    advantages, returns = [], []
    for r_row, v_row, m_row in zip(rewards, values, mask, strict=True):
        steps = [t for t, m in enumerate(m_row) if m]
        adv = [0.0] * len(r_row)
        running = 0.0
        for k in reversed(range(len(steps))):
            t = steps[k]
            next_value = v_row[steps[k + 1]] if k + 1 < len(steps) else 0.0
            delta = r_row[t] + gamma * next_value - v_row[t]
            running = delta + gamma * lam * running
            adv[t] = running
        advantages.append(adv)
        returns.append([a + v if m else 0.0 for a, v, m in zip(adv, v_row, m_row, strict=True)])
    return advantages, returns


def test_gae_hand_values():
    # One row, three steps, reward 1 at the end, gamma 0.9, lam 0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    mask = torch.tensor([[True, True, True]])
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    d2 = 1.0 - 0.4  # last step: no next value
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2 = d2
    a1 = d1 + 0.45 * a2
    a0 = d0 + 0.45 * a1
    assert advantages.tolist()[0] == pytest.approx([a0, a1, a2])
    assert returns.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_gae_skips_injected_and_padding_steps():
    # Step 1 is environment-injected: step 0 bootstraps from step 2's value.
    rewards = torch.tensor([[0.0, 5.0, 1.0, 0.0]])  # the 5 on an injected step is ignored
    values = torch.tensor([[0.5, 9.0, 0.4, 7.0]])
    mask = torch.tensor([[True, False, True, False]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    a2 = 1.0 - 0.4
    a0 = (0.0 + 0.4 - 0.5) + a2
    assert advantages.tolist()[0] == pytest.approx([a0, 0.0, a2, 0.0])
    assert returns.tolist()[0] == pytest.approx([a0 + 0.5, 0.0, 1.0, 0.0])


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.0), (0.99, 1.0)])
def test_gae_matches_naive_loop(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(5, 9, generator=generator)
    values = torch.randn(5, 9, generator=generator)
    mask = torch.rand(5, 9, generator=generator) < 0.7
    mask[0] = False  # a row with no step at all
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    expected_adv, expected_ret = naive_gae(
        rewards.tolist(), values.tolist(), mask.tolist(), gamma, lam
    )
    assert advantages.tolist() == [pytest.approx(row, abs=1e-5) for row in expected_adv]
    assert returns.tolist() == [pytest.approx(row, abs=1e-5) for row in expected_ret]


def test_whiten_uses_masked_entries_only():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, False]])
    assert whiten(values, mask).tolist()[0] == pytest.approx([-1.0, 1.0, 0.0], abs=1e-6)


def test_group_mean():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0])
    ids = torch.tensor([0, 1, 0, 1])
    assert group_mean(values, ids).tolist() == [2.0, 6.0, 2.0, 6.0]


def test_group_normalized_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 2.0, 7.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    adv = group_normalized_advantages(rewards, ids, eps=0.0 + 1e-12)
    # Group 0: mean 0.25, population std sqrt(3)/4.
    std = math.sqrt(3) / 4
    assert adv[:4].tolist() == pytest.approx([0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std])
    # Equal rewards and singleton groups carry no signal.
    assert adv[4:].tolist() == [0.0, 0.0, 0.0]
    two = group_normalized_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), eps=0.0)
    assert two.tolist() == [1.0, -1.0]
    centred = group_normalized_advantages(rewards, ids, scale=False)
    assert centred[:4].tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])


def test_entropic_weights_hand_values():
    rewards = torch.tensor([1.0, 0.0, 0.0, 3.0, 3.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1, 1])
    weights = entropic_weights(rewards, ids, tau=0.5)
    e2 = math.exp(2.0)
    assert weights.tolist() == pytest.approx([e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2), 0.5, 0.5])
    adv = entropic_advantages(rewards, ids, tau=0.5)
    assert adv.tolist() == pytest.approx(
        [3 * e2 / (e2 + 2) - 1, 3 / (e2 + 2) - 1, 3 / (e2 + 2) - 1, 0.0, 0.0]
    )


def test_entropic_weights_stable_and_limits():
    # Large rewards / small tau would overflow a naive exp.
    rewards = torch.tensor([1000.0, 999.0, 0.0, 5.0], dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 1])
    weights = entropic_weights(rewards, ids, tau=0.01)
    assert torch.isfinite(weights).all()
    assert weights.tolist() == pytest.approx([1.0, 0.0, 0.0, 1.0], abs=1e-12)
    # Each group's advantages sum to 0; for large tau they approach (r - mean) / tau.
    r = torch.tensor([0.3, 0.9, 0.0, 0.2], dtype=torch.float64)
    g = torch.tensor([0, 0, 0, 0])
    tau = 1e4
    adv = entropic_advantages(r, g, tau)
    assert float(adv.sum()) == pytest.approx(0.0, abs=1e-12)
    assert (adv * tau).tolist() == pytest.approx((r - r.mean()).tolist(), rel=1e-3)
