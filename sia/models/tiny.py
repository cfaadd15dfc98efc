"""Tiny models built in code, for tests and offline demos: no download, ready in milliseconds.

The tokenizer is byte-level (token id == byte value for ids 0..255) plus three special
tokens, so any text round-trips and the vocabulary stays at 259. The model is a small
``LlamaForCausalLM``: the same architecture family as the embedded default, so code paths
(KV cache, padding, LoRA target modules) are the ones the real model exercises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from statemachine.errors import ConfigError

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "TINY_CHAT_TEMPLATE",
    "TinyConfig",
    "build_tiny",
    "build_tiny_model",
    "build_tiny_tokenizer",
]

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
_SPECIALS = (PAD, BOS, EOS)

# One turn per message, each closed by EOS, so a model trained on it learns to stop.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


@dataclass(frozen=True)
class TinyConfig:
    """Shape of the tiny Llama. Defaults give ≈ 0.11M parameters.

    ``init_std`` is larger than Llama's 0.02 so that an untrained model's next-token
    distribution is peaked: greedy decoding then has no near-ties that float noise from
    batching could flip.
    """

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 128
    max_positions: int = 512
    init_std: float = 0.1

    def __post_init__(self) -> None:
        for field_name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads"):
            if getattr(self, field_name) <= 0:
                raise ConfigError(f"TinyConfig.{field_name} must be positive")
        if self.hidden_size % self.num_heads:
            raise ConfigError("TinyConfig.hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError("TinyConfig.num_heads must be divisible by num_kv_heads")
        if (self.hidden_size // self.num_heads) % 2:
            raise ConfigError("TinyConfig head size must be even (rotary embeddings)")
        if self.intermediate_size <= 0 or self.max_positions <= 1:
            raise ConfigError("TinyConfig.intermediate_size and max_positions must be positive")
        if not self.init_std > 0:
            raise ConfigError("TinyConfig.init_std must be positive")


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer: ids 0..255 are bytes, then ``<pad>``, ``<bos>``, ``<eos>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    to_char = _byte_to_char()
    vocab = {to_char[byte]: byte for byte in range(256)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # No regex split and no merges: every byte is its own token.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(list(_SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast, seed: int = 0, config: TinyConfig | None = None
) -> LlamaForCausalLM:
    """A randomly initialised Llama sized by ``config``, seeded without touching global RNG."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = config or TinyConfig()
    hf_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_positions,
        initializer_range=shape.init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model


def build_tiny(
    seed: int = 0, config: TinyConfig | None = None
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A seeded tiny model and its byte-level tokenizer; same seed, same weights."""
    tokenizer = build_tiny_tokenizer()
    return build_tiny_model(tokenizer, seed=seed, config=config), tokenizer


def _byte_to_char() -> dict[int, str]:
    # The GPT-2 byte-to-unicode table that ByteLevel pre-tokenization expects: printable
    # bytes map to themselves, the rest to unused code points from 256 up.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table
