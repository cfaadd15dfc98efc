from pathlib import Path

import pytest
import torch

from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny

LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "down_proj"]


@pytest.fixture(params=["packed", "padded"])
def tiny_policy(request: pytest.FixtureRequest) -> HFPolicy:
    """The seed-0 tiny model, once per decode loop (see ``sia.models.decoding``)."""
    model, tokenizer = build_tiny(seed=0)
    return HFPolicy(model, tokenizer, packed=request.param == "packed")


@pytest.fixture(scope="session")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random LoRA adapters for the seed-0 tiny model, saved in peft's format.

    ``init_lora_weights=False`` draws B as well as A at random; peft's default zero B would
    make an adapter that changes nothing.
    """
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("adapters")
    dirs = {}
    for name, seed in (("alpha", 11), ("beta", 22)):
        model, _ = build_tiny(seed=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            config = LoraConfig(
                r=4, lora_alpha=16, target_modules=LORA_TARGETS, init_lora_weights=False
            )
            peft_model = get_peft_model(model, config)
        peft_model.save_pretrained(root / name)
        dirs[name] = root / name
    return dirs
