"""The ``openai`` policy backend: any OpenAI-compatible endpoint, for harness runs only.

Each :class:`GenRequest` becomes one HTTP call (chat → ``/chat/completions``, prompt →
``/completions``); a batch is sent concurrently so the gateway's micro-batching still pays,
and the gateway sends each request as it arrives (``generate_continuous``), so a slow,
failing or hanging call holds back no other.

An arbitrary endpoint reports text and per-token logprobs but no token ids, so
``token_ids`` says where ids come from:

- ``"none"``: nowhere. ``prompt_ids``, ``completion_ids`` and ``logprobs`` are all empty
  (logprobs are not even asked for): a logprob means nothing without the token it belongs
  to, and the gateway pairs them one to one. ``usage`` is still the endpoint's.
- ``"tokenizer"``: a local HF tokenizer of the same model. Prompt ids come from its chat
  template (as ``HFPolicy.encode``); completion ids from mapping each returned token string
  back to the one id it encodes to, or, when some string does not round-trip (a partial
  UTF-8 byte, say), from tokenizing the text, whose logprobs are then kept only if the two
  counts agree.
- ``"vllm"``: asks vLLM for ids (``return_token_ids``, ``return_tokens_as_token_ids``) and
  reads them from ``token_ids`` or the ``"token_id:123"`` token strings; prompt ids from
  ``prompt_token_ids``, else the tokenizer if one was given.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import queue
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

import httpx2

from sia.models.errors import AdaptersUnsupported, GenerationError, describe
from sia.models.generation import Generation, GenRequest, Usage, encode_prompt
from statemachine.errors import ConfigError

__all__ = ["OpenAIBackendConfig", "OpenAIPolicy", "TokenIdSource", "continuous"]

TokenIdSource = Literal["none", "tokenizer", "vllm"]
_TOKEN_ID_SOURCES = ("none", "tokenizer", "vllm")
_MAX_BACKOFF_S = 30.0
_VLLM_PREFIX = "token_id:"
_ADMIT_POLL_S = 0.005


@dataclass(frozen=True)
class OpenAIBackendConfig:
    """Where the endpoint is and how to talk to it. Help text lives in ``metadata["help"]``."""

    base_url: str = field(metadata={"help": "API root with its /v1: http://127.0.0.1:8000/v1"})
    model: str = field(metadata={"help": "model name sent with every request"})
    api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={"help": "environment variable with the API key; unset: no Authorization"},
    )
    timeout_s: float = field(default=120.0, metadata={"help": "seconds per HTTP call"})
    max_retries: int = field(default=3, metadata={"help": "retries after 429, 5xx, no connection"})
    backoff_s: float = field(default=0.5, metadata={"help": "first retry delay, doubling, ≤ 30 s"})
    max_concurrency: int = field(default=8, metadata={"help": "HTTP calls in flight at once"})
    token_ids: TokenIdSource = field(
        default="none", metadata={"help": "where token ids come from: none, tokenizer, vllm"}
    )
    # repr=False: a header may carry a credential (the gateway's episode token, say).
    headers: Mapping[str, str] = field(
        default_factory=dict,
        repr=False,
        hash=False,
        metadata={"help": "extra HTTP headers sent with every request"},
    )

    def __post_init__(self) -> None:
        checks = [
            (self.base_url.startswith(("http://", "https://")), "base_url must be an http(s) URL"),
            (bool(self.model), "model must not be empty"),
            (bool(self.api_key_env), "api_key_env must name an environment variable"),
            (math.isfinite(self.timeout_s) and self.timeout_s > 0, "timeout_s must be > 0"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (math.isfinite(self.backoff_s) and self.backoff_s >= 0, "backoff_s must be >= 0"),
            (self.max_concurrency >= 1, "max_concurrency must be >= 1"),
            (self.token_ids in _TOKEN_ID_SOURCES, f"token_ids must be one of {_TOKEN_ID_SOURCES}"),
            (
                all(isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()),
                "headers must map strings to strings",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"OpenAIBackendConfig: {message}")
        object.__setattr__(self, "headers", dict(self.headers))


class OpenAIPolicy:
    """A policy served by an OpenAI-compatible endpoint; it cannot train or load adapters.

    ``tokenizer`` (a HF tokenizer of the served model) is required for
    ``token_ids="tokenizer"`` and optional otherwise. ``http_client`` replaces the
    ``httpx2.Client`` built here (tests pass one with a mock transport). The API key is read
    from the environment at each call and kept nowhere.
    """

    def __init__(
        self,
        config: OpenAIBackendConfig,
        *,
        tokenizer: Any = None,
        http_client: httpx2.Client | None = None,
    ) -> None:
        if config.token_ids == "tokenizer" and tokenizer is None:
            raise ConfigError('OpenAIPolicy: token_ids="tokenizer" needs a tokenizer')
        self._config = config
        self._tokenizer = tokenizer
        self._owns_client = http_client is None
        self._client = http_client or httpx2.Client(
            limits=httpx2.Limits(max_connections=config.max_concurrency)
        )
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="sia-openai")

    @property
    def config(self) -> OpenAIBackendConfig:
        return self._config

    @property
    def tokenizer(self) -> Any:
        """The local tokenizer, if any (the gateway renders token text with it)."""
        return self._tokenizer

    @property
    def active_adapter(self) -> str | None:
        return None

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Complete every request concurrently; results are in request order.

        Once all have ended, raises the first failed request's :class:`GenerationError`.
        """
        for request in requests:
            if not isinstance(request, GenRequest):
                raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        futures = [self._pool.submit(self._complete, request) for request in requests]
        for error in [future.exception() for future in futures]:
            if error is not None:
                raise error
        return [future.result() for future in futures]

    def generate_continuous(
        self,
        requests: Sequence[GenRequest],
        admit: Callable[[int], Sequence[GenRequest]],
        finished: Callable[[int, Generation | Exception], None],
    ) -> None:
        """Continuous batching over HTTP (``HFPolicy.generate_continuous`` has the contract).

        Each request is sent as soon as it is admitted and answered as soon as the endpoint
        answers it. With :meth:`generate`, the gateway's batch waited for its slowest
        request, and one failure sent every request of the batch again, one by one; here a
        request that fails or hangs holds back only its own caller.
        """
        continuous(
            lambda request: self._pool.submit(self.complete, request),
            requests,
            admit,
            finished,
            self._config.max_concurrency,
        )

    def load_adapter(self, name: str, path: str | Path) -> None:
        raise AdaptersUnsupported(
            f"adapter {name!r}: the openai backend serves a fixed remote model and cannot "
            "train or load adapters (use the hf or vllm backend)"
        )

    def set_adapter(self, name: str | None) -> None:
        """``None`` (the served model as is) is the only choice; any name is refused."""
        if name is not None:
            self.load_adapter(name, "")

    def unload_adapter(self, name: str) -> None:
        self.load_adapter(name, "")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- one request --------------------------------------------------------------------

    def complete(
        self, request: GenRequest, *, model: str | None = None, base_url: str | None = None
    ) -> Generation:
        """Complete one request, blocking; ``model`` and ``base_url`` override the config's.

        The ``vllm`` backend sends each request here with the adapter it names as ``model``
        and one of its replicas as ``base_url``.
        """
        if not isinstance(request, GenRequest):
            raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        return self._complete(request, model=model, base_url=base_url)

    def _complete(
        self, request: GenRequest, *, model: str | None = None, base_url: str | None = None
    ) -> Generation:
        chat = request.messages is not None
        mode = self._config.token_ids
        body: dict[str, Any] = {
            "model": model or self._config.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        body.update({"messages": request.messages} if chat else {"prompt": request.prompt})
        if request.seed is not None:
            body["seed"] = request.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if mode != "none":
            # Chat takes a flag; text completions a count of alternatives, and 1 is the
            # smallest that every server reads as "on".
            body["logprobs"] = True if chat else 1
        if mode == "vllm":
            body.update(return_token_ids=True, return_tokens_as_token_ids=True)
        root = base_url or self._config.base_url
        payload = self._post("/chat/completions" if chat else "/completions", body, root)
        try:
            return self._generation(request, payload, chat)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            raise GenerationError(f"malformed response from {root}: {describe(error)}") from None

    def _generation(self, request: GenRequest, payload: Any, chat: bool) -> Generation:
        choice = payload["choices"][0]
        if chat:
            text = choice["message"].get("content") or ""
            entries = (choice.get("logprobs") or {}).get("content") or []
            pieces = [(str(e["token"]), float(e["logprob"])) for e in entries]
        else:
            text = choice["text"]
            logprobs = choice.get("logprobs") or {}
            tokens, values = logprobs.get("tokens") or [], logprobs.get("token_logprobs") or []
            pieces = [(str(t), float(v)) for t, v in zip(tokens, values, strict=True)]
        if not isinstance(text, str):
            raise TypeError("the completion text is not a string")
        prompt_ids, completion_ids, logprobs_out = self._ids(request, payload, choice, text, pieces)
        usage = payload.get("usage") or {}
        prompt_n = int(usage.get("prompt_tokens", len(prompt_ids)))
        completion_n = int(usage.get("completion_tokens", len(completion_ids)))
        return Generation(
            text=text,
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
            logprobs=logprobs_out,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(prompt_n, completion_n, prompt_n + completion_n),
            seed=request.seed,
        )

    def _ids(
        self, request: GenRequest, payload: Any, choice: Any, text: str, pieces: list[Any]
    ) -> tuple[list[int], list[int], list[float]]:
        """Prompt ids, completion ids, and the logprobs if they pair with those ids."""
        mode = self._config.token_ids
        logprobs = [value for _, value in pieces]
        if mode == "none":
            return [], [], []
        if mode == "vllm":
            raw = payload.get("prompt_token_ids") or choice.get("prompt_token_ids")
            prompt = [int(t) for t in raw] if raw else self._encode_prompt(request)
            if choice.get("token_ids") is not None:
                completion = [int(t) for t in choice["token_ids"]]
            else:
                completion = [_vllm_id(token) for token, _ in pieces]
        else:
            prompt = self._encode_prompt(request)
            mapped = [self._plain_ids(token) for token, _ in pieces]
            if pieces and all(len(ids) == 1 for ids in mapped):
                completion = [ids[0] for ids in mapped]
            else:
                completion = self._plain_ids(text)
        return prompt, completion, logprobs if len(logprobs) == len(completion) else []

    def _encode_prompt(self, request: GenRequest) -> list[int]:
        if self._tokenizer is None:
            return []
        return encode_prompt(self._tokenizer, request)

    def _plain_ids(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text, add_special_tokens=False)]

    # ---- HTTP ---------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], base_url: str | None = None) -> Any:
        config = self._config
        url = (base_url or config.base_url).rstrip("/") + path
        headers = dict(config.headers)
        key = os.environ.get(config.api_key_env) or None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(config.max_retries + 1):
            wait: float | None = None
            try:
                response = self._client.post(
                    url, json=body, headers=headers, timeout=config.timeout_s
                )
            except httpx2.TimeoutException:
                # Not retried: a generation that overran its time would likely overrun again,
                # and the episode's own timeout is already running.
                raise GenerationError(f"{url}: no answer within {config.timeout_s:g} s") from None
            except httpx2.HTTPError as error:
                failure = f"cannot reach {url}: {describe(error)}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        return response.json()
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        raise GenerationError(
                            f"malformed response from {url}: the body is not JSON"
                        ) from None
                failure = f"{url} answered HTTP {status}: {_error_text(response)}"
                if status != 429 and status < 500:
                    raise GenerationError(_redact(failure, key)) from None
                wait = _retry_after(response)
            if attempt < config.max_retries:
                # Jitter keeps a batch's threads from retrying in lockstep on a busy server.
                if wait is None:
                    wait = config.backoff_s * 2**attempt * (0.75 + random.random() / 2)
                time.sleep(min(_MAX_BACKOFF_S, wait))
        tries = config.max_retries + 1
        raise GenerationError(_redact(f"{failure} (after {tries} tries)", key))


def continuous(
    submit: Callable[[GenRequest], Future[Generation]],
    requests: Sequence[GenRequest],
    admit: Callable[[int], Sequence[GenRequest]],
    finished: Callable[[int, Generation | Exception], None],
    capacity: int,
) -> None:
    """Drive ``submit`` with continuous batching until nothing is in flight or admitted.

    Requests are numbered in arrival order (``requests`` first, then each admitted one);
    ``finished(index, result)`` gets each one's generation or error as soon as it ends.
    At most ``capacity`` are in flight; ``admit(room)`` offers up to ``room`` more.
    """
    done: queue.Queue[tuple[int, Future[Generation]]] = queue.Queue()
    arrivals = itertools.count()
    in_flight = 0

    def send(batch: Sequence[GenRequest]) -> None:
        nonlocal in_flight
        for request in batch:
            index = next(arrivals)
            submit(request).add_done_callback(lambda f, i=index: done.put((i, f)))
            in_flight += 1

    send(requests)
    while True:
        offered = admit(max(0, capacity - in_flight))
        send(offered)
        if in_flight == 0 and not offered:
            return
        try:
            index, future = done.get(timeout=_ADMIT_POLL_S)
        except queue.Empty:
            continue
        in_flight -= 1
        error = future.exception()
        finished(index, error if error is not None else future.result())


def _vllm_id(token: str) -> int:
    if not token.startswith(_VLLM_PREFIX):
        raise ValueError(f"token {token[:20]!r} is not 'token_id:N' (return_tokens_as_token_ids)")
    return int(token[len(_VLLM_PREFIX) :])


def _error_text(response: httpx2.Response) -> str:
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        text = str(error.get("message", error) if isinstance(error, dict) else error)
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text
    line = " ".join(text.split())
    return (line[:200] + "…") if len(line) > 200 else (line or "no error message")


def _retry_after(response: httpx2.Response) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _redact(message: str, key: str | None) -> str:
    # A server may echo the key it refused; it must not reach logs or the ledger through us.
    return message.replace(key, "[redacted]") if key else message
