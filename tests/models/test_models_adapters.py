import shutil

import pytest
import torch
from safetensors.torch import load_file

from sia.models.errors import AdapterError
from sia.models.generation import GenRequest
from sia.models.tiny import build_tiny

REQUESTS = [
    GenRequest(prompt="adapters change me", max_tokens=16, temperature=0.0),
    GenRequest(prompt="and me too", max_tokens=16, temperature=1.0, seed=5),
]


def ids(policy) -> list[list[int]]:
    return [result.completion_ids for result in policy.generate(REQUESTS)]


def logprobs(policy) -> list[list[float]]:
    return [result.logprobs for result in policy.generate(REQUESTS)]


def test_saved_adapters_have_nonzero_b_weights(lora_dirs):
    weights = load_file(lora_dirs["alpha"] / "adapter_model.safetensors")
    b_weights = [tensor for key, tensor in weights.items() if "lora_B" in key]
    assert b_weights
    assert all(tensor.abs().sum() > 0 for tensor in b_weights)


def test_load_switch_unload_and_base_restored(tiny_policy, lora_dirs):
    base_ids, base_logprobs = ids(tiny_policy), logprobs(tiny_policy)

    tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
    assert tiny_policy.active_adapter is None
    assert tiny_policy.adapters == ("alpha",)
    assert logprobs(tiny_policy) == base_logprobs

    tiny_policy.set_adapter("alpha")
    alpha_ids = ids(tiny_policy)
    assert alpha_ids != base_ids
    assert all(result.adapter == "alpha" for result in tiny_policy.generate(REQUESTS))

    tiny_policy.load_adapter("beta", lora_dirs["beta"])
    assert tiny_policy.active_adapter == "alpha"
    assert ids(tiny_policy) == alpha_ids
    tiny_policy.set_adapter("beta")
    beta_ids = ids(tiny_policy)
    assert beta_ids not in (base_ids, alpha_ids)

    tiny_policy.set_adapter(None)
    assert logprobs(tiny_policy) == base_logprobs
    tiny_policy.set_adapter("alpha")
    assert ids(tiny_policy) == alpha_ids

    tiny_policy.unload_adapter("alpha")
    assert tiny_policy.active_adapter is None
    assert tiny_policy.adapters == ("beta",)
    assert logprobs(tiny_policy) == base_logprobs
    tiny_policy.set_adapter("beta")
    assert ids(tiny_policy) == beta_ids

    tiny_policy.unload_adapter("beta")
    assert tiny_policy.adapters == ()
    assert type(tiny_policy.model).__name__ == "LlamaForCausalLM"
    assert logprobs(tiny_policy) == base_logprobs


def test_adapter_matches_merged_weights_and_rescoring(tiny_policy, lora_dirs):
    from peft import PeftModel

    tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
    tiny_policy.set_adapter("alpha")
    served = tiny_policy.generate(REQUESTS)
    for result in served:
        rescored = tiny_policy.score(result.prompt_ids, result.completion_ids)
        assert max(abs(a - b) for a, b in zip(result.logprobs, rescored, strict=True)) < 1e-4

    # An independent path: merge the same adapter into a fresh base and score there.
    model, _ = build_tiny(seed=0)
    merged = PeftModel.from_pretrained(model, lora_dirs["alpha"]).merge_and_unload().eval()
    result = served[0]
    sequence = torch.tensor([[*result.prompt_ids, *result.completion_ids]])
    with torch.inference_mode():
        logits = merged(input_ids=sequence).logits[0, len(result.prompt_ids) - 1 : -1]
    expected = torch.log_softmax(logits, -1).gather(
        -1, torch.tensor(result.completion_ids).unsqueeze(-1)
    )
    assert expected.squeeze(-1).tolist() == pytest.approx(result.logprobs, abs=1e-4)


def test_reloading_after_full_unload_gives_the_same_adapter(tiny_policy, lora_dirs):
    tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
    tiny_policy.set_adapter("alpha")
    first = ids(tiny_policy)
    tiny_policy.unload_adapter("alpha")
    tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
    tiny_policy.set_adapter("alpha")
    assert ids(tiny_policy) == first


def test_adapter_errors(tiny_policy, lora_dirs, tmp_path):
    with pytest.raises(AdapterError, match="not a peft adapter"):
        tiny_policy.load_adapter("x", tmp_path)
    with pytest.raises(AdapterError, match="no adapter named"):
        tiny_policy.set_adapter("missing")
    with pytest.raises(AdapterError, match="no adapter named"):
        tiny_policy.unload_adapter("missing")
    tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
    with pytest.raises(AdapterError, match="already loaded"):
        tiny_policy.load_adapter("alpha", lora_dirs["beta"])
    broken = tmp_path / "broken"
    shutil.copytree(lora_dirs["beta"], broken)
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="cannot load adapter"):
        tiny_policy.load_adapter("broken", broken)
    assert tiny_policy.adapters == ("alpha",)


@pytest.mark.parametrize("first", [True, False], ids=["first-adapter", "second-adapter"])
def test_a_corrupt_adapter_leaves_the_policy_as_it_was(tiny_policy, lora_dirs, tmp_path, first):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(lora_dirs["beta"], corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not safetensors" * 8)
    if not first:
        tiny_policy.load_adapter("alpha", lora_dirs["alpha"])
        tiny_policy.set_adapter("alpha")
    before = logprobs(tiny_policy)
    with pytest.raises(AdapterError, match="cannot load adapter 'corrupt'"):
        tiny_policy.load_adapter("corrupt", corrupt)
    assert logprobs(tiny_policy) == before
    assert tiny_policy.adapters == (() if first else ("alpha",))
    missing = tmp_path / "missing"
    shutil.copytree(lora_dirs["beta"], missing)
    (missing / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="no adapter weights"):
        tiny_policy.load_adapter("missing", missing)
    tiny_policy.load_adapter("beta", lora_dirs["beta"])
    tiny_policy.set_adapter("beta")
    assert logprobs(tiny_policy) != before
