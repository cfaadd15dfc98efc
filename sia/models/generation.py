"""Backend-neutral generation values and the protocol every policy backend implements.

The gateway turns OpenAI-style calls into :class:`GenRequest`, hands a batch to a backend,
and records each :class:`Generation` (token ids and per-token logprobs) in the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from statemachine.errors import ConfigError

__all__ = ["FinishReason", "GenRequest", "Generation", "PolicyBackend", "Usage", "encode_prompt"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenRequest:
    """One completion request: either chat ``messages`` or a raw ``prompt``, not both.

    ``temperature == 0`` means greedy decoding (then ``top_p`` and ``seed`` do not matter).
    ``seed`` makes sampling reproducible; ``None`` draws a fresh seed, which the resulting
    :class:`Generation` reports. ``stop`` strings end the completion and are cut from its
    text (OpenAI semantics).
    """

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ConfigError("GenRequest needs exactly one of messages and prompt")
        if self.messages is not None:
            if not self.messages:
                raise ConfigError("GenRequest.messages must not be empty")
            for message in self.messages:
                if not isinstance(message, dict) or "role" not in message:
                    raise ConfigError("every GenRequest message needs a 'role'")
        if self.max_tokens < 1:
            raise ConfigError(f"GenRequest.max_tokens must be >= 1, got {self.max_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"GenRequest.temperature must be >= 0, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise ConfigError(f"GenRequest.top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"GenRequest.seed must be in [0, 2**63), got {self.seed}")
        if self.stop is not None and any(not s for s in self.stop):
            raise ConfigError("GenRequest.stop strings must not be empty")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class Generation:
    """A completion with the exact tokens sampled and their log-probabilities.

    ``completion_ids`` are every sampled token, including a terminating EOS and the tokens
    of a stop string (``text`` excludes both). ``logprobs[i]`` is the log-probability of
    ``completion_ids[i]`` under the distribution it was sampled from: after temperature
    scaling and top-p renormalisation; for greedy decoding, the raw log-softmax.
    """

    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason
    usage: Usage
    seed: int | None = None
    adapter: str | None = field(default=None)


@runtime_checkable
class PolicyBackend(Protocol):
    """What the gateway and trainers need of a policy model backend."""

    @property
    def active_adapter(self) -> str | None: ...

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]: ...

    def score(
        self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *, temperature: float = 1.0
    ) -> list[float]: ...

    def load_adapter(self, name: str, path: str | Path) -> None: ...

    def set_adapter(self, name: str | None) -> None: ...

    def unload_adapter(self, name: str) -> None: ...


def encode_prompt(tokenizer: Any, request: GenRequest) -> list[int]:
    """``request``'s prompt token ids: the chat template with its generation prompt, or the
    raw prompt tokenised. Tokenizer failures become :class:`GenerationError`."""
    from sia.models.errors import GenerationError, describe

    try:
        if request.messages is not None:
            encoded: Any = tokenizer.apply_chat_template(
                request.messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            encoded = tokenizer(request.prompt).input_ids
    except (ValueError, KeyError, TypeError) as error:
        raise GenerationError(f"cannot encode the prompt: {describe(error)}") from None
    ids = list(encoded)
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(token) for token in ids]
