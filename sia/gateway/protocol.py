"""The OpenAI wire format: request bodies to :class:`GenRequest`, generations to responses."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sia.models.generation import Generation

__all__ = ["ApiError", "ParsedCall", "completion_response", "parse_call"]

_DEFAULT_MAX_TOKENS = 256


class ApiError(Exception):
    """A request the gateway refuses, with its HTTP status and OpenAI error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedCall:
    """A validated request: what to generate and how to answer."""

    chat: bool
    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str] | None
    logprobs: bool
    model: str


def parse_call(body: Any, *, chat: bool) -> ParsedCall:
    """Validate an OpenAI ``chat/completions`` (``chat``) or ``completions`` body."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request_error", "the request body must be a JSON object")
    if body.get("stream"):
        raise ApiError(400, "unsupported", "streaming is not supported by the gateway")
    if body.get("n", 1) != 1:
        raise ApiError(400, "unsupported", "the gateway returns one choice per call (n=1)")
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    if chat:
        messages = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise ApiError(400, "invalid_request_error", "'prompt' must be a non-empty string")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = _DEFAULT_MAX_TOKENS if limit is None else _int(limit, "max_tokens", low=1)
    temperature = _number(body.get("temperature", 1.0), "temperature", low=0.0, high=2.0)
    top_p = _number(body.get("top_p", 1.0), "top_p", low=0.0, high=1.0)
    if top_p == 0:
        raise ApiError(400, "invalid_request_error", "'top_p' must be > 0")
    seed = body.get("seed")
    if seed is not None:
        seed = _int(seed, "seed", low=0) % 2**63
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)
    ):
        raise ApiError(400, "invalid_request_error", "'stop' must be a string or list of them")
    # Chat asks with a boolean; text completions with a count (0 still means "the sampled
    # token's logprob"), so only absence or false turns them off there.
    raw_logprobs = body.get("logprobs")
    logprobs = bool(raw_logprobs) if chat else not (raw_logprobs is None or raw_logprobs is False)
    model = body.get("model", "policy")
    return ParsedCall(
        chat=chat,
        messages=messages,
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop=stop or None,
        logprobs=logprobs,
        model=model if isinstance(model, str) else "policy",
    )


def completion_response(
    call: ParsedCall,
    generation: Generation,
    *,
    call_id: str,
    token_text: Callable[[int], str],
) -> dict[str, Any]:
    """The OpenAI response object for ``generation``, with ``usage`` and logprobs if asked."""
    usage = {
        "prompt_tokens": generation.usage.prompt_tokens,
        "completion_tokens": generation.usage.completion_tokens,
        "total_tokens": generation.usage.total_tokens,
    }
    created = int(time.time())
    if call.chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "finish_reason": generation.finish_reason,
            "logprobs": None,
        }
        if call.logprobs:
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token_text(token),
                        "logprob": _finite(logprob),
                        "bytes": list(token_text(token).encode("utf-8")),
                        "top_logprobs": [],
                    }
                    for token, logprob in zip(
                        generation.completion_ids, generation.logprobs, strict=True
                    )
                ]
            }
        return {
            "id": call_id,
            "object": "chat.completion",
            "created": created,
            "model": call.model,
            "choices": [choice],
            "usage": usage,
        }
    text_choice: dict[str, Any] = {
        "index": 0,
        "text": generation.text,
        "finish_reason": generation.finish_reason,
        "logprobs": None,
    }
    if call.logprobs:
        tokens = [token_text(token) for token in generation.completion_ids]
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        text_choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": [_finite(lp) for lp in generation.logprobs],
            "top_logprobs": None,
            "text_offset": offsets,
        }
    return {
        "id": call_id,
        "object": "text_completion",
        "created": created,
        "model": call.model,
        "choices": [text_choice],
        "usage": usage,
    }


def _messages(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise ApiError(400, "invalid_request_error", "'messages' must be a non-empty list")
    messages = []
    for message in value:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise ApiError(400, "invalid_request_error", "every message needs a string 'role'")
        content = message.get("content", "")
        if isinstance(content, list):
            # The content-parts form: only text parts mean anything to a text-only policy.
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, "invalid_request_error", "message 'content' must be text")
        messages.append({"role": message["role"], "content": content})
    return messages


def _int(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ApiError(400, "invalid_request_error", f"'{name}' must be an integer >= {low}")
    return value


def _number(value: Any, name: str, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, "invalid_request_error", f"'{name}' must be a number")
    if not (math.isfinite(value) and low <= value <= high):
        raise ApiError(400, "invalid_request_error", f"'{name}' must be in [{low}, {high}]")
    return float(value)


def _finite(value: float) -> float:
    # JSON has no -inf; a token outside the top-p nucleus cannot be sampled anyway.
    return value if math.isfinite(value) else -9999.0
