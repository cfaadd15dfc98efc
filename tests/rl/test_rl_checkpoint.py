"""What train_lora writes, what it refuses, and that it is reproducible."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from rl.data import Sample
from rl.errors import RLConfigError, RLError
from rl.lora import LoraSettings
from rl.registry import algorithm_config
from rl.train import train_lora
from tests.rl.rl_support import sample

FAST = {"epochs": 1, "learning_rate": 1e-2}


def fixed_logprobs(model):
    """Logprobs of a fixed token sequence: the fingerprint of a model's weights."""
    ids = torch.tensor([[1, 50, 51, 52, 97, 98, 99, 100, 101, 102, 103]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    return torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")
def test_saved_adapter_reloads_and_reproduces_the_trained_model(pretrained, tmp_path):
    from peft import PeftModel

    base, tokenizer = pretrained
    model = copy.deepcopy(base)
    samples = sample(model, seed=1, group_size=4)
    result = train_lora(model, tokenizer, samples, "grpo", config=FAST, out_dir=tmp_path)
    model.eval()
    trained = fixed_logprobs(model)
    assert not torch.allclose(trained, fixed_logprobs(base), atol=1e-4)

    assert result.path == tmp_path
    assert (tmp_path / "adapter_config.json").is_file()
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "value_head.safetensors").exists()
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path))
    assert torch.allclose(fixed_logprobs(reloaded), trained, atol=1e-6)

    record = json.loads((tmp_path / "sia_training.json").read_text())
    assert record["format"] == "sia-training/1"
    assert record["algorithm"] == "grpo" == result.algorithm
    assert record["config"] == algorithm_config("grpo", FAST).to_dict() == result.config
    assert record["lora"] == LoraSettings().to_dict() == result.lora
    assert record["seed"] == 0 and record["init_adapter"] is None
    assert record["metrics"] == json.loads(json.dumps(result.metrics))
    for key in ("loss", "grad_norm", "stats", "steps", "samples", "items", "mean_reward"):
        assert key in result.metrics
    assert result.metrics["samples"] == len(samples) == 32
    assert result.metrics["mean_reward"] == pytest.approx(sum(s.reward for s in samples) / 32)
    assert set(result.metrics["stats"]) == {"clip_fraction", "approx_kl"}
    assert set(record["versions"]) == {"torch", "peft", "transformers"}


def test_ppo_value_head_is_saved_and_continued(pretrained, tmp_path):
    base, tokenizer = pretrained
    model = copy.deepcopy(base)
    samples = sample(model, seed=1, group_size=2)
    first = train_lora(model, tokenizer, samples, "ppo_gae", config=FAST, out_dir=tmp_path / "one")
    head = load_file(str(tmp_path / "one" / "value_head.safetensors"))
    assert head["weight"].shape == (1, 64) and head["bias"].shape == (1,)
    assert head["weight"].abs().sum() > 0  # trained away from its zero init
    assert first.metrics["data"]["value_head_loaded"] is False
    record = json.loads((tmp_path / "one" / "sia_training.json").read_text())
    assert record["heads"] == {"value_head": "value_head.safetensors"}

    # Continuing: the adapter's own LoRA settings win, and the value head comes along.
    second = train_lora(
        copy.deepcopy(base),
        tokenizer,
        samples,
        "ppo_gae",
        config=FAST,
        lora=LoraSettings(rank=2),
        init_adapter=tmp_path / "one",
        out_dir=tmp_path / "two",
    )
    assert second.metrics["data"]["value_head_loaded"] is True
    assert second.lora["rank"] == 8
    assert json.loads((tmp_path / "two" / "sia_training.json").read_text())["init_adapter"] == str(
        tmp_path / "one"
    )


def test_same_seed_same_adapter(pretrained, tmp_path):
    base, tokenizer = pretrained
    samples = sample(base, seed=1, group_size=4)
    rng_before = torch.random.get_rng_state()
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_lora(
            copy.deepcopy(base),
            tokenizer,
            samples,
            "reinforce_kl",
            config=FAST,
            seed=seed,
            out_dir=tmp_path / name,
        )
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # caller's RNG untouched
    a, b, c = (load_file(str(tmp_path / n / "adapter_model.safetensors")) for n in "abc")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_injected_tokens_are_context_not_targets(pretrained, tmp_path):
    base, tokenizer = pretrained
    samples = []
    for s in sample(base, seed=1, group_size=4):
        # Tokens 2 and 3 "came from a tool": their recorded logprobs are meaningless.
        logprobs = list(s.logprobs)
        logprobs[2:4] = [-50.0, -50.0]
        samples.append(
            Sample(
                s.prompt_ids,
                s.completion_ids,
                logprobs,
                s.reward,
                s.group,
                completion_mask=(True, True, False, False, True, True),
            )
        )
    result = train_lora(
        copy.deepcopy(base), tokenizer, samples, "grpo", config=FAST, out_dir=tmp_path
    )
    # Were the injected tokens in the ratio, the first step would see exp(+45) ratios.
    assert result.metrics["stats"]["approx_kl"][0] == pytest.approx(0.0, abs=1e-6)
    assert result.metrics["stats"]["clip_fraction"][0] == 0.0
    assert result.metrics["tokens_trained"] == 4 * result.metrics["items"]


def s(reward, group, completion=(65,)):
    return Sample((1, 2), completion, (-1.0,) * len(completion), reward, group)


@pytest.mark.parametrize(
    ("algorithm", "samples", "config", "message"),
    [
        ("grpo", [s(1, "a"), s(0, "b")], {}, "grpo: no usable training data: none of 2 groups"),
        ("grpo", [s(1, "a"), s(1, "a", (66,))], {}, "has two samples with different rewards"),
        ("entropic", [s(0, "a"), s(0, "a", (66,))], {}, "entropic: no usable training data"),
        ("dpo", [s(1, "a"), s(0, "b")], {}, "dpo: no usable training data: no pair"),
        ("dpo", [s(1, "a"), s(0, "a")], {}, "no pair of distinct completions"),
        ("bon_bc", [s(0.2, "a"), s(0.1, "b")], {"threshold": 0.5}, "no sample has reward > "),
        ("ppo_gae", [s(1, "a"), s(1, "b")], {}, "ppo_gae: no usable training data: all 2"),
        ("reinforce_kl", [s(1, "a"), s(1, "b")], {}, "every advantage is 0"),
    ],
)
def test_no_signal_is_a_one_line_error_and_writes_nothing(
    algorithm, samples, config, message, pretrained, tmp_path
):
    base, tokenizer = pretrained
    out = tmp_path / "out"
    with pytest.raises(RLError) as caught:
        train_lora(copy.deepcopy(base), tokenizer, samples, algorithm, config=config, out_dir=out)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not out.exists()


def test_bad_calls(pretrained, tmp_path):
    base, tokenizer = pretrained
    model = copy.deepcopy(base)
    one = [s(1, "a"), s(0, "a", (66,))]
    with pytest.raises(RLError, match="grpo: no samples to train on"):
        train_lora(model, tokenizer, [], "grpo", out_dir=tmp_path)
    with pytest.raises(RLConfigError, match="unknown RL algorithm 'sft'"):
        train_lora(model, tokenizer, one, "sft", out_dir=tmp_path)
    with pytest.raises(RLConfigError, match="config is a DPOConfig, but grpo takes a GRPOConfig"):
        train_lora(model, tokenizer, one, "grpo", config=algorithm_config("dpo"), out_dir=tmp_path)
    with pytest.raises(RLConfigError, match="unknown grpo setting 'temperature'"):
        train_lora(model, tokenizer, one, "grpo", config={"temperature": 1}, out_dir=tmp_path)
    with pytest.raises(RLConfigError, match="cannot attach LoRA"):
        train_lora(
            model,
            tokenizer,
            one,
            "grpo",
            lora=LoraSettings(target_modules=("c_attn",)),
            out_dir=tmp_path,
        )
    with pytest.raises(RLError, match="is not a peft adapter"):
        train_lora(
            copy.deepcopy(base), tokenizer, one, "grpo", init_adapter=tmp_path, out_dir=tmp_path
        )
    config = algorithm_config("grpo", FAST)
    result = train_lora(
        copy.deepcopy(base), tokenizer, one, "grpo", config=config, out_dir=tmp_path
    )
    assert result.config == config.to_dict()


def test_kl_reference_starts_at_the_base(pretrained, tmp_path):
    base, tokenizer = pretrained
    samples = sample(base, seed=1, group_size=4)
    result = train_lora(
        copy.deepcopy(base),
        tokenizer,
        samples,
        "grpo",
        config={**FAST, "beta": 0.1, "minibatch_size": 8},
        out_dir=tmp_path,
    )
    kl = result.metrics["stats"]["kl_ref"]
    # A fresh LoRA starts as the identity, so the policy starts exactly at the reference.
    assert kl[0] == pytest.approx(0.0, abs=1e-7)
    assert kl[-1] > 0


def test_base_model_dropout_stays_off(pretrained, tmp_path):
    base, tokenizer = pretrained
    model = copy.deepcopy(base)
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    samples = sample(base, seed=1, group_size=4)
    result = train_lora(model, tokenizer, samples, "grpo", config=FAST, out_dir=tmp_path)
    # With attention dropout active the first step's ratios would not all be 1.
    assert result.metrics["stats"]["approx_kl"][0] == pytest.approx(0.0, abs=1e-6)
    assert not model.training
