"""Each algorithm raises a synthetic reward on the pre-trained tiny model.

Sample with the current policy, train with ``train_lora``, sample again with the same
seeds, and check: mean reward rose, every LoRA parameter moved, the base weights did not.
Seeded end to end, so the numbers are the same on every run on the same torch build.
"""

import pytest
import torch

from rl.registry import ALGORITHMS
from rl.train import train_lora
from tests.rl.rl_support import mean_reward, sample

# Per-algorithm settings for a 0.1M-parameter model: far larger learning rates than for
# SmolLM2 so that a few steps visibly move it. DPO overshoots at the PG rate (it pushes
# mass onto tokens neither side used), so it gets a smaller one.
SETTINGS = {
    "ppo_gae": {"learning_rate": 1e-2, "epochs": 4},
    "grpo": {"learning_rate": 1e-2, "epochs": 4},
    "entropic": {"learning_rate": 1e-2, "epochs": 4},
    "reinforce_kl": {"learning_rate": 1e-2, "epochs": 4},
    "dpo": {"learning_rate": 2e-3, "epochs": 3},
    "bon_bc": {"learning_rate": 1e-2, "epochs": 8, "threshold": 0.4, "per_group": 3},
}
# Mean reward over 8 prompts x 16 samples must rise by at least this much (the base is
# ~0.33; one sample's reward has std ~0.19, so a 128-sample mean moves ~0.02 by chance).
MIN_GAIN = 0.04


def test_every_registered_algorithm_is_exercised():
    assert set(SETTINGS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", sorted(SETTINGS))
def test_training_raises_reward(algorithm, policy_model, tmp_path):
    model, tokenizer = policy_model
    base_params = {name: p.detach().clone() for name, p in model.named_parameters()}
    base_objects = dict(model.named_parameters())
    train = sample(model, seed=1, group_size=8)
    before = mean_reward(sample(model, seed=2, group_size=16))

    result = train_lora(
        model, tokenizer, train, algorithm, config=SETTINGS[algorithm], seed=0, out_dir=tmp_path
    )

    after = mean_reward(sample(model, seed=2, group_size=16))
    print(f"{algorithm}: reward {before:.3f} -> {after:.3f} in {result.metrics['steps']} steps")
    assert after >= before + MIN_GAIN, (before, after)

    # Every LoRA parameter moved (B from its zero init, A from its random one).
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    initial = _initial_lora(tokenizer, seed=0)
    for name, param in lora.items():
        assert not torch.equal(param.detach(), initial[name]), name
    # The base weights are the very same tensors, bit for bit.
    for name, param in base_objects.items():
        assert torch.equal(param.detach(), base_params[name]), name
        assert not param.requires_grad, name
    assert result.metrics["steps"] == len(result.metrics["loss"]) > 0
    assert result.metrics["tokens_trained"] > 0


def _initial_lora(tokenizer, seed):
    """The LoRA weights train_lora starts from: same seed, same init, no steps."""
    from rl.lora import LoraSettings, attach_lora
    from sia.models.tiny import build_tiny_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = attach_lora(build_tiny_model(tokenizer), LoraSettings())
    return {
        n.removeprefix("base_model.model."): p.detach().clone()
        for n, p in peft_model.named_parameters()
        if "lora_" in n
    }
