"""The vllm backend against the real vLLM, on a CUDA machine (skipped elsewhere).

In process, on the embedded SmolLM2 (vLLM's attention kernels do not take the tiny test
model's head size), with a random LoRA adapter: vLLM's processed logprobs must match what
transformers computes for the same tokens under the same weights.
"""

from pathlib import Path

import pytest

from sia.models.errors import ModelNotCached
from sia.models.generation import GenRequest

pytestmark = pytest.mark.gpu

TOLERANCE = 0.05  # vLLM runs bf16/fp16 kernels; transformers scores in float32


@pytest.fixture(scope="module")
def base_dir() -> Path:
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from sia.models import DEFAULT_MODEL, model_path

    try:
        return model_path(DEFAULT_MODEL, fetch=False)
    except ModelNotCached:
        pytest.skip(f"{DEFAULT_MODEL} is not cached (sia models fetch)")


@pytest.fixture(scope="module")
def adapter(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from sia.models import load_model

    model, _ = load_model(base_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
        )
        peft_model = get_peft_model(model, config)
    out = tmp_path_factory.mktemp("vllm-gpu") / "alpha"
    peft_model.save_pretrained(out)
    return out


def test_real_vllm_in_process_matches_transformers_under_an_adapter(
    base_dir: Path, adapter: Path
) -> None:
    from sia.models import load_model
    from sia.models.hf_backend import HFPolicy
    from sia.models.vllm_backend import VLLMConfig, open_vllm

    request = GenRequest(
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        max_tokens=16,
        temperature=1.0,
        seed=11,
    )
    config = VLLMConfig(
        model=str(base_dir), in_process=True, max_lora_rank=8, gpu_memory_utilization=0.3
    )
    with open_vllm(config) as policy:
        [base] = policy.generate([request])
        policy.load_adapter("alpha", adapter)
        policy.set_adapter("alpha")
        [tuned] = policy.generate([request])
    assert base.adapter is None and tuned.adapter == "alpha"
    model, tokenizer = load_model(base_dir)
    reference = HFPolicy(model, tokenizer)
    for generation, name in ((base, None), (tuned, "alpha")):
        assert generation.completion_ids and generation.prompt_ids
        assert len(generation.logprobs) == len(generation.completion_ids)
        if name is not None:
            reference.load_adapter(name, adapter)
        reference.set_adapter(name)
        scored = reference.score(generation.prompt_ids, generation.completion_ids)
        assert generation.logprobs == pytest.approx(scored, abs=TOLERANCE), name
