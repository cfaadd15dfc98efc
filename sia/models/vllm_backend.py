"""The ``vllm`` policy backend: fast rollouts from vLLM, with LoRA adapters swapped live.

Training stays with transformers (on the same base model directory); vLLM only generates.
An adapter the run trains is handed to vLLM by path, so the next rollout samples from it
without a restart. Three ways of reaching vLLM (:class:`VLLMConfig`):

- attach: servers already running (``vllm serve BASE --enable-lora ...`` with
  ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``); several endpoints are replicas, used
  round-robin per request, and every adapter is loaded on each of them;
- serve: the same, but this backend starts the server and stops it on close;
- in process: a ``vllm.LLM`` engine (:mod:`sia.models.vllm_engine`).

Every generation carries vLLM's own token ids and per-token logprobs. The server is told
``--logprobs-mode processed_logprobs`` (an attached one must be started with it): the
logprob of a token is then taken from the distribution it was actually sampled from, after
temperature and top-p, as :class:`~sia.models.generation.Generation` promises. Raw logprobs
would make every PPO ratio wrong by the temperature's distortion.

Each generation also names the adapter that produced it (``Generation.adapter``): the one
active when its batch started, which is the model name its request carried, so the
gateway's ledger attributes every call to the weights that really answered it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import httpx2

from sia.models.adapter_slots import AdapterSlots
from sia.models.errors import AdapterError, GenerationError, ModelLoadError, describe
from sia.models.generation import Generation, GenRequest
from sia.models.openai_backend import OpenAIBackendConfig, OpenAIPolicy, _error_text, continuous
from sia.models.vllm_config import VLLMConfig
from sia.models.vllm_serve import VLLMServer

__all__ = ["VLLMConfig", "VLLMServerPolicy", "check_adapter_dir", "load_tokenizer", "open_vllm"]

# How often a continuous run asks the gateway for newly arrived requests while it waits.


def open_vllm(config: VLLMConfig, *, tokenizer: Any = None) -> Any:
    """The backend ``config`` asks for: a :class:`VLLMServerPolicy` (attach, serve) or a
    :class:`~sia.models.vllm_engine.VLLMEnginePolicy` (in process)."""
    if config.in_process:
        from sia.models.vllm_engine import VLLMEnginePolicy

        return VLLMEnginePolicy(config, tokenizer=tokenizer)
    return VLLMServerPolicy(config, tokenizer=tokenizer)


class VLLMServerPolicy(AdapterSlots):
    """vLLM behind its OpenAI-compatible HTTP API, one or more replicas.

    Generation reuses :class:`OpenAIPolicy` (``token_ids="vllm"``): its retries, timeouts
    and one-line errors. Adapter changes go to vLLM's ``/v1/load_lora_adapter`` and
    ``/v1/unload_lora_adapter`` on every replica. ``set_adapter`` only changes the model
    name later requests carry; the gateway calls it between batches, so a batch never mixes
    adapters. ``http_client`` replaces the client built here (tests).
    """

    def __init__(
        self,
        config: VLLMConfig,
        *,
        tokenizer: Any = None,
        http_client: httpx2.Client | None = None,
    ) -> None:
        if config.in_process:
            raise ModelLoadError("VLLMServerPolicy serves over HTTP; use open_vllm for in_process")
        self._config = config
        self._server: VLLMServer | None = None
        self._owns_client = http_client is None
        self._client = http_client or httpx2.Client(
            limits=httpx2.Limits(max_connections=config.max_concurrency)
        )
        self._init_slots()
        try:
            if config.serve:
                self._server = VLLMServer.start(config)
                self._endpoints: tuple[str, ...] = (self._server.base_url,)
            else:
                self._endpoints = tuple(e.rstrip("/") for e in config.endpoints)
            self._base = config.served_model_name or (
                config.model if config.serve else self._discover_base()
            )
            self._http = OpenAIPolicy(
                OpenAIBackendConfig(
                    base_url=self._endpoints[0],
                    model=self._base,
                    api_key_env=config.api_key_env,
                    timeout_s=config.timeout_s,
                    max_retries=config.max_retries,
                    backoff_s=config.backoff_s,
                    max_concurrency=config.max_concurrency,
                    token_ids="vllm",
                ),
                tokenizer=tokenizer,
                http_client=self._client,
            )
        except BaseException:
            self._shutdown()
            raise
        self._pool = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix="sia-vllm")
        self._turn = itertools.count()

    # ---- what the gateway reads ---------------------------------------------------------

    @property
    def config(self) -> VLLMConfig:
        return self._config

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The API roots requests go to, round-robin."""
        return self._endpoints

    @property
    def base_model(self) -> str:
        """The model name requests carry when no adapter is active."""
        return self._base

    @property
    def tokenizer(self) -> Any:
        return self._http.tokenizer

    # ---- generation ---------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Complete every request concurrently, round-robin over the replicas; results are in
        request order. Once all have ended, raises the first failure."""
        for request in requests:
            if not isinstance(request, GenRequest):
                raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        adapter = self._active  # one snapshot: the whole batch runs on the same weights
        model = adapter or self._base
        futures = [
            self._pool.submit(self._http.complete, request, model=model, base_url=self._next())
            for request in requests
        ]
        for error in [future.exception() for future in futures]:
            if error is not None:
                raise error
        return [replace(future.result(), adapter=adapter) for future in futures]

    def generate_continuous(
        self,
        requests: Sequence[GenRequest],
        admit: Callable[[int], Sequence[GenRequest]],
        finished: Callable[[int, Generation | Exception], None],
    ) -> None:
        """Continuous batching, left to vLLM's scheduler: every request is sent as soon as it
        is admitted and answered as soon as vLLM answers it, so a slow completion never holds
        back the others (``HFPolicy.generate_continuous`` has the contract).

        The adapter is fixed for the whole run; the gateway's batcher stops admitting once an
        adapter switch is queued and switches after this returns.
        """
        adapter = self._active
        model = adapter or self._base

        def submit(request: GenRequest) -> Future[Generation]:
            return self._pool.submit(self._complete, request, model, self._next(), adapter)

        continuous(submit, requests, admit, finished, self._config.max_concurrency)

    def _complete(
        self, request: GenRequest, model: str, base_url: str, adapter: str | None
    ) -> Generation:
        generation = self._http.complete(request, model=model, base_url=base_url)
        return replace(generation, adapter=adapter)

    def _next(self) -> str:
        return self._endpoints[next(self._turn) % len(self._endpoints)]

    # ---- adapters -----------------------------------------------------------------------

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load the peft adapter at ``path`` under ``name`` on every replica.

        The path is made absolute: vLLM reads it on its own side. An adapter of the same
        name left on a server by an earlier process (a run resumed after a crash) is
        replaced. A replica that refuses leaves none of them with the adapter.
        """
        if not name:
            raise AdapterError("adapter name must not be empty")
        directory = str(Path(path).expanduser().resolve())
        check_adapter_dir(directory, self._config.max_lora_rank, required=False)
        with self._lock:
            if name in self._adapters:
                raise AdapterError(f"an adapter named {name!r} is already loaded")
            done: list[str] = []
            try:
                for endpoint in self._endpoints:
                    if name in self._served(endpoint):
                        self._admin(endpoint, "unload", {"lora_name": name}, name)
                    self._admin(endpoint, "load", {"lora_name": name, "lora_path": directory}, name)
                    done.append(endpoint)
            except AdapterError:
                for endpoint in done:
                    # The original failure is the one worth reporting.
                    with contextlib.suppress(AdapterError):
                        self._admin(endpoint, "unload", {"lora_name": name}, name)
                raise
            self._adapters[name] = directory

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name`` from every replica; if it was active, the base model is."""
        with self._lock:
            self._require(name)
            for endpoint in self._endpoints:
                self._admin(endpoint, "unload", {"lora_name": name}, name)
            self._forget(name)

    # ---- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()
        self._shutdown()

    def _shutdown(self) -> None:
        if self._owns_client:
            self._client.close()
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- HTTP besides generation --------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self._config.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _models(self, endpoint: str) -> list[dict[str, Any]]:
        url = f"{endpoint}/models"
        try:
            response = self._client.get(url, headers=self._headers(), timeout=30.0)
        except httpx2.HTTPError as error:
            raise ModelLoadError(f"cannot reach vLLM at {url}: {describe(error)}") from None
        if response.status_code != 200:
            raise ModelLoadError(
                f"vLLM at {url} answered HTTP {response.status_code}: {_error_text(response)}"
            )
        try:
            data = response.json()["data"]
            return [dict(entry) for entry in data]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ModelLoadError(f"{url} does not list models as vLLM does") from None

    def _discover_base(self) -> str:
        """The base model every replica serves: the one listed without a ``parent``."""
        found: set[str] = set()
        for endpoint in self._endpoints:
            bases = [str(m["id"]) for m in self._models(endpoint) if not m.get("parent")]
            if len(bases) != 1:
                raise ModelLoadError(
                    f"vLLM at {endpoint} serves {len(bases)} base models "
                    f"({', '.join(bases) or 'none'}); name one with served_model_name"
                )
            found.update(bases)
        if len(found) > 1:
            raise ModelLoadError(f"the replicas serve different models: {', '.join(sorted(found))}")
        return found.pop()

    def _served(self, endpoint: str) -> set[str]:
        try:
            return {str(m["id"]) for m in self._models(endpoint)}
        except ModelLoadError as error:
            raise AdapterError(str(error)) from None

    def _admin(self, endpoint: str, verb: str, body: dict[str, str], name: str) -> None:
        url = f"{endpoint}/{verb}_lora_adapter"
        try:
            response = self._client.post(
                url, json=body, headers=self._headers(), timeout=self._config.timeout_s
            )
        except httpx2.HTTPError as error:
            raise AdapterError(
                f"cannot {verb} adapter {name!r}: cannot reach {url}: {describe(error)}"
            ) from None
        if not 200 <= response.status_code < 300:
            hint = ""
            if response.status_code in (404, 405) and verb == "load":
                hint = " (start vLLM with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            raise AdapterError(
                f"cannot {verb} adapter {name!r}: {url} answered HTTP {response.status_code}: "
                f"{_error_text(response)}{hint}"
            )


def check_adapter_dir(path: str | Path, max_rank: int, *, required: bool) -> None:
    """Refuse an adapter vLLM would refuse mid-rollout: one whose rank exceeds ``max_rank``.

    ``required``: the directory must exist here (in process). A server may read paths this
    machine cannot see, so otherwise an unreadable directory is left for vLLM to judge.
    """
    config = Path(path) / "adapter_config.json"
    try:
        settings = json.loads(config.read_text())
    except OSError:
        if required:
            raise AdapterError(f"{path} is not a peft adapter (no adapter_config.json)") from None
        return
    except json.JSONDecodeError:
        raise AdapterError(f"{config} is not JSON") from None
    rank = settings.get("r") if isinstance(settings, dict) else None
    if isinstance(rank, int) and rank > max_rank:
        raise AdapterError(
            f"adapter {path} has rank {rank}, above vLLM's max_lora_rank {max_rank} "
            "(raise --max-lora-rank)"
        )


def load_tokenizer(directory: str | Path) -> Any:
    """The HF tokenizer of a local model directory, or ``None`` when it has none.

    The gateway renders token text with it; vLLM itself reports token ids.
    """
    path = Path(directory)
    if not path.is_dir():
        return None
    from transformers import AutoTokenizer

    from sia.models.loading import quiet_transformers

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
    # tokenizers and transformers raise unrelated types for a directory without a tokenizer.
    except Exception as error:
        raise ModelLoadError(f"cannot load the tokenizer from {path}: {describe(error)}") from None
