import pytest
import torch

from sia.models.tiny import TinyConfig, build_tiny, build_tiny_tokenizer
from statemachine.errors import ConfigError


def test_tokenizer_is_byte_level_with_three_specials():
    tokenizer = build_tiny_tokenizer()
    assert len(tokenizer) == 259
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (
        256,
        257,
        258,
    )
    text = "12+7 = 19, héllo ✓\n"
    ids = tokenizer(text).input_ids
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text


def test_chat_template_renders_turns_and_generation_prompt():
    tokenizer = build_tiny_tokenizer()
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    assert tokenizer.decode(ids) == "<bos>system: be brief<eos>user: 2+2?<eos>assistant: "
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.eos_token_id) == 2


def test_same_seed_same_weights_without_touching_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first, _ = build_tiny(seed=5)
    assert torch.equal(torch.rand(3), expected_next)
    second, _ = build_tiny(seed=5)
    third, _ = build_tiny(seed=6)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), third.parameters(), strict=True)
    )


def test_default_shape_is_tiny():
    model, tokenizer = build_tiny()
    assert model.config.hidden_size == 64
    assert model.config.num_hidden_layers == 2
    assert model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert not model.training


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hidden_size": 0},
        {"hidden_size": 60, "num_heads": 8},
        {"num_heads": 4, "num_kv_heads": 3},
        {"hidden_size": 12, "num_heads": 4, "num_kv_heads": 1},
        {"max_positions": 1},
        {"init_std": 0.0},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        TinyConfig(**kwargs)
