"""Configs, registry, LoRA settings and samples: validated up front, one-line errors."""

import json
import subprocess
import sys
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest

from rl.algorithms.bon_bc import best_of_groups
from rl.algorithms.dpo import pairs_within_groups
from rl.data import Sample, group_by
from rl.errors import RLConfigError, RLError
from rl.lora import LoraSettings
from rl.registry import ALGORITHMS, algorithm_config, get_algorithm
from statemachine.errors import ConfigError, SiaError


def test_registry_names_and_classes():
    assert sorted(ALGORITHMS) == ["bon_bc", "dpo", "entropic", "grpo", "ppo_gae", "reinforce_kl"]
    for name, cls in ALGORITHMS.items():
        assert cls.name == name
        assert cls.summary
        config = algorithm_config(name)
        assert type(config) is cls.Config
        assert config.algorithm == name
        # Every field documents itself, and the config round-trips through JSON.
        assert all(spec.metadata.get("help") for spec in fields(config))
        assert cls.Config(**json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(TypeError):
        ALGORITHMS["x"] = object  # read-only


def test_configs_are_frozen():
    config = algorithm_config("grpo")
    with pytest.raises(FrozenInstanceError):
        config.learning_rate = 1.0


def test_errors_belong_to_the_project_hierarchy():
    assert issubclass(RLError, SiaError)
    assert issubclass(RLConfigError, RLError)
    assert issubclass(RLConfigError, ConfigError)


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("ppo", {}, "unknown RL algorithm 'ppo'; known: bon_bc, dpo, entropic, grpo, ppo_gae"),
        ("grpo", {"lr": 1e-3}, "unknown grpo setting 'lr'; known: learning_rate,"),
        ("grpo", {"lr": 1, "x": 2}, "unknown grpo settings 'lr', 'x'; known:"),
        ("grpo", {"clip_eps": 0}, "grpo.clip_eps must be > 0, got 0.0"),
        ("grpo", {"learning_rate": -1e-4}, "grpo.learning_rate must be > 0"),
        ("grpo", {"aggregation": "mean"}, "grpo.aggregation must be one of token, sequence"),
        ("grpo", {"scale_rewards": "yes"}, "grpo.scale_rewards must be true or false"),
        ("dpo", {"epochs": 2.0}, "dpo.epochs must be an integer, got 2.0"),
        ("dpo", {"epochs": True}, "dpo.epochs must be an integer, got True"),
        ("dpo", {"label_smoothing": 0.5}, "dpo.label_smoothing must be < 0.5"),
        ("dpo", {"beta": float("nan")}, "dpo.beta must be finite"),
        ("ppo_gae", {"lam": 1.5}, "ppo_gae.lam must be <= 1"),
        ("ppo_gae", {"minibatch_size": 0}, "ppo_gae.minibatch_size must be >= 1"),
        ("entropic", {"tau": 0.0}, "entropic.tau must be > 0"),
        ("reinforce_kl", {"baseline": "none"}, "reinforce_kl.baseline must be one of group"),
        ("reinforce_kl", {"is_cap": 0.5}, "reinforce_kl.is_cap must be >= 1"),
        ("bon_bc", {"per_group": 0}, "bon_bc.per_group must be >= 1"),
        ("bon_bc", {"threshold": "high"}, "bon_bc.threshold must be a number"),
    ],
)
def test_config_errors(name, overrides, message):
    with pytest.raises(RLConfigError) as caught:
        algorithm_config(name, overrides)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_config_overrides_and_int_as_float():
    config = algorithm_config("grpo", {"learning_rate": 1, "beta": 0})
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert config.beta == 0.0
    assert get_algorithm("dpo").Config().beta == 0.1


def test_lora_settings_validation():
    assert LoraSettings().to_dict() == {
        "rank": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    }
    assert LoraSettings(target_modules=["q_proj"]).target_modules == ("q_proj",)
    for bad, message in [
        ({"rank": 0}, "LoraSettings.rank must be a positive int"),
        ({"alpha": 1.5}, "LoraSettings.alpha must be a positive int"),
        ({"dropout": 1.0}, "LoraSettings.dropout must be in [0, 1)"),
        ({"target_modules": ()}, "LoraSettings.target_modules must be non-empty"),
    ]:
        with pytest.raises(RLConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
            LoraSettings(**bad)


def sample(reward=1.0, group="g", completion=(5,), **kw):
    return Sample(
        prompt_ids=kw.pop("prompt_ids", (1,)),
        completion_ids=completion,
        logprobs=kw.pop("logprobs", (-0.5,) * len(completion)),
        reward=reward,
        group=group,
        **kw,
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_ids": ()}, "prompt_ids is empty"),
        ({"completion": ()}, "completion_ids is empty"),
        ({"logprobs": (-1.0, -2.0)}, "2 logprobs for 1 completion tokens"),
        ({"logprobs": (float("-inf"),)}, "logprobs must be finite and <= 0"),
        ({"logprobs": (0.5,)}, "logprobs must be finite and <= 0"),
        ({"reward": float("nan")}, "reward must be a finite number"),
        ({"temperature": -1.0}, "temperature must be >= 0"),
        ({"completion_mask": (True, False)}, "completion_mask has 2 entries for 1"),
        ({"prompt_ids": (-1,)}, "token ids must be non-negative ints"),
    ],
)
def test_sample_validation(kwargs, message):
    with pytest.raises(RLError, match=message):
        sample(**kwargs)


def test_sample_normalises_sequences():
    s = Sample([1, 2], [3, 4], [-1.0, -2.0], 1.0, "g", completion_mask=[1, 0])
    assert s.prompt_ids == (1, 2) and s.completion_ids == (3, 4)
    assert s.completion_mask == (True, False)
    assert s.trained == (True, False) and s.n_trained == 1
    assert sample().trained == (True,)
    assert sample(temperature=0.0).scale == 1.0


def test_group_by_keeps_order():
    samples = [sample(group="b"), sample(group="a"), sample(group="b")]
    assert group_by(samples) == {"b": [0, 2], "a": [1]}


def test_dpo_pairs_within_groups():
    samples = [
        sample(1.0, "a", (1,)),
        sample(0.0, "a", (2,)),
        sample(0.5, "a", (3,)),
        sample(0.0, "a", (1,)),  # same completion as the best: never paired with it
        sample(1.0, "b", (4,)),  # alone in its group
        sample(0.2, "c", (5,)),
        sample(0.2, "c", (6,)),  # equal rewards: no pair
    ]
    assert pairs_within_groups(samples, 0.0, 10) == [(0, 1), (0, 2), (2, 1), (2, 3)]
    assert pairs_within_groups(samples, 0.5, 10) == [(0, 1)]
    assert pairs_within_groups(samples, 0.0, 1) == [(0, 1)]


def test_best_of_groups():
    samples = [
        sample(0.5, "a", (1,)),
        sample(0.9, "a", (2,)),
        sample(0.9, "a", (2,)),  # duplicate completion of the best
        sample(0.7, "a", (3,)),
        sample(0.1, "b", (4,)),
    ]
    assert best_of_groups(samples, 0.0, 1) == [1, 4]
    assert best_of_groups(samples, 0.0, 2) == [1, 3, 4]
    assert best_of_groups(samples, 0.6, 5) == [1, 3]
    assert best_of_groups(samples, 0.95, 5) == []


def test_configs_and_registry_import_without_torch():
    code = (
        "import sys, rl.registry, rl.data, rl.lora, rl.errors; "
        "rl.registry.algorithm_config('ppo_gae', {'gamma': 0.99}); "
        "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    ).stdout
    assert out.strip() == "[]"
