"""The ``vllm`` backend in process: a ``vllm.LLM`` engine with per-request LoRA.

No server and no HTTP: the gateway's batch goes to one ``LLM.chat`` / ``LLM.generate``
call, and an adapter is a ``LoRARequest(name, int_id, path)`` passed along with it. vLLM is
imported only here, and only when an engine is built, so the rest of SIA runs without it.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from sia.models.adapter_slots import AdapterSlots
from sia.models.errors import (
    AdapterError,
    GenerationError,
    ModelLoadError,
    PromptTooLong,
    describe,
)
from sia.models.generation import Generation, GenRequest, Usage
from sia.models.vllm_backend import check_adapter_dir
from sia.models.vllm_config import VLLMConfig
from sia.models.vllm_serve import INSTALL_HINT

__all__ = ["VLLMEnginePolicy"]


def _import_vllm() -> tuple[Any, Any, Any]:
    """``(LLM, SamplingParams, LoRARequest)``, or a :class:`ModelLoadError` saying how to
    get them."""
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError as error:
        raise ModelLoadError(
            f"the vllm backend needs vLLM ({describe(error)}); {INSTALL_HINT}"
        ) from None
    return vllm.LLM, vllm.SamplingParams, LoRARequest


class VLLMEnginePolicy(AdapterSlots):
    """A ``vllm.LLM`` engine as a policy backend (``VLLMConfig(in_process=True)``).

    Logprobs are vLLM's processed ones (``logprobs_mode="processed_logprobs"``): those of
    the distribution each token was sampled from, after temperature and top-p, so the ratios
    of PPO-style training are right. One lock serialises the engine: ``LLM`` is not
    thread-safe, and an adapter change must not land mid-batch.
    """

    def __init__(self, config: VLLMConfig, *, tokenizer: Any = None) -> None:
        if not config.in_process:
            raise ModelLoadError("VLLMEnginePolicy runs in process; use open_vllm for servers")
        llm_class, self._sampling_params, self._lora_request = _import_vllm()
        self._config = config
        try:
            self._llm = llm_class(
                model=config.model,
                served_model_name=config.served_model_name,
                enable_lora=True,
                max_lora_rank=config.max_lora_rank,
                max_loras=config.max_loras,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
                logprobs_mode="processed_logprobs",
            )
        # vLLM raises whatever its config checks, CUDA and the model loader raise.
        except Exception as error:
            raise ModelLoadError(f"vLLM cannot load {config.model}: {describe(error)}") from None
        self._tokenizer = tokenizer
        self._init_slots()
        self._ids = itertools.count(1)  # vLLM's adapter ids: unique, positive

    @property
    def config(self) -> VLLMConfig:
        return self._config

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self._llm.get_tokenizer()
        return self._tokenizer

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Complete every request in one engine pass per kind (chat, text); in order."""
        for request in requests:
            if not isinstance(request, GenRequest):
                raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        with self._lock:
            adapter = self._active
            lora = self._adapters.get(adapter) if adapter is not None else None
            seeds = [_seed(request) for request in requests]
            results: list[Generation | None] = [None] * len(requests)
            for chat in (True, False):
                picked = [i for i, r in enumerate(requests) if (r.messages is not None) == chat]
                if not picked:
                    continue
                params = [self._params(requests[i], seeds[i]) for i in picked]
                outputs = self._run(chat, [requests[i] for i in picked], params, lora)
                if len(outputs) != len(picked):
                    raise GenerationError(f"vLLM returned {len(outputs)} of {len(picked)} outputs")
                for i, output in zip(picked, outputs, strict=True):
                    results[i] = _generation(output, seeds[i], adapter)
            return [result for result in results if result is not None]

    def _params(self, request: GenRequest, seed: int | None) -> Any:
        # logprobs=0: only the sampled token's logprob, which is all the ledger keeps.
        return self._sampling_params(
            n=1,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=seed,
            stop=list(request.stop) if request.stop else None,
            logprobs=0,
        )

    def _run(self, chat: bool, requests: list[GenRequest], params: list[Any], lora: Any) -> Any:
        try:
            if chat:
                return self._llm.chat(
                    [r.messages for r in requests], params, lora_request=lora, use_tqdm=False
                )
            return self._llm.generate(
                [r.prompt for r in requests], params, lora_request=lora, use_tqdm=False
            )
        except ValueError as error:
            message = describe(error)
            if "maximum model length" in message or "too long" in message:
                raise PromptTooLong(message) from None
            raise GenerationError(f"vLLM: {message}") from None
        except Exception as error:
            raise GenerationError(f"vLLM: {describe(error)}") from None

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Register the peft adapter at ``path`` as ``name`` and have the engine load it now,
        so a bad adapter fails here rather than in the middle of a rollout."""
        if not name:
            raise AdapterError("adapter name must not be empty")
        directory = Path(path).expanduser().resolve()
        check_adapter_dir(directory, self._config.max_lora_rank, required=True)
        with self._lock:
            if name in self._adapters:
                raise AdapterError(f"an adapter named {name!r} is already loaded")
            request = self._lora_request(name, next(self._ids), str(directory))
            engine = getattr(self._llm, "llm_engine", None)
            if engine is not None and hasattr(engine, "add_lora"):
                try:
                    engine.add_lora(request)
                except Exception as error:
                    raise AdapterError(
                        f"vLLM cannot load adapter {name!r} from {directory}: {describe(error)}"
                    ) from None
            self._adapters[name] = request

    def unload_adapter(self, name: str) -> None:
        with self._lock:
            request = self._require(name)
            engine = getattr(self._llm, "llm_engine", None)
            if engine is not None and hasattr(engine, "remove_lora"):
                engine.remove_lora(request.lora_int_id)
            self._forget(name)

    def close(self) -> None:
        with self._lock:
            self._adapters.clear()
            self._llm = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _seed(request: GenRequest) -> int | None:
    """A request's seed; a sampled request without one gets a fresh one, as ``hf`` does, so
    every sample in the ledger can be drawn again."""
    if request.greedy:
        return request.seed
    return request.seed if request.seed is not None else secrets.randbits(63)


def _generation(output: Any, seed: int | None, adapter: str | None) -> Generation:
    try:
        choice = output.outputs[0]
        completion = [int(token) for token in choice.token_ids]
        pairs = zip(choice.logprobs or [], completion, strict=False)
        logprobs = [float(step[token].logprob) for step, token in pairs]
        prompt = [int(token) for token in (output.prompt_token_ids or [])]
        text = str(choice.text)
        finish = "length" if choice.finish_reason == "length" else "stop"
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as error:
        raise GenerationError(f"unexpected vLLM output: {describe(error)}") from None
    if len(logprobs) != len(completion):
        logprobs = []  # a logprob means nothing without the token it belongs to
    return Generation(
        text=text,
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=logprobs,
        finish_reason=finish,
        usage=Usage(len(prompt), len(completion), len(prompt) + len(completion)),
        seed=seed,
        adapter=adapter,
    )
