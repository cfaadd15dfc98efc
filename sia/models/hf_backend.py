"""The in-process transformers policy backend, with hot-swappable LoRA adapters.

Decoding is a hand-written loop over the model's KV cache rather than ``model.generate``:
``generate`` draws every row from one global RNG, so a request's sample would depend on
what else was in its batch, and its scores are post-processed in ways that make "the
logprob of the sampled token" ambiguous. Here each request has its own seeded generator and
its logprobs come from exactly the distribution it was sampled from.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sia.models.errors import AdapterError, GenerationError, describe
from sia.models.generation import FinishReason, Generation, GenRequest, Usage
from sia.models.sampling import next_tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["HFPolicy"]

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass
class _Row:
    """Decoding state of one request inside a batch."""

    request: GenRequest
    prompt_ids: list[int]
    budget: int
    seed: int | None
    generator: torch.Generator | None
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    text: str | None = None
    done: bool = False


class HFPolicy:
    """A causal LM served in process: batched seeded generation, re-scoring, LoRA adapters.

    All public methods hold one lock, so concurrent callers (the gateway's threads) are
    served one batch at a time and an adapter switch never lands mid-generation.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str = "cpu",
        max_batch_size: int = 16,
    ) -> None:
        if max_batch_size < 1:
            raise GenerationError(f"max_batch_size must be >= 1, got {max_batch_size}")
        try:
            self._device = torch.device(device)
            self._base = model.to(self._device).eval()
        except (RuntimeError, ValueError) as error:
            raise GenerationError(f"cannot use device {device!r}: {describe(error)}") from error
        self._model: Any = self._base
        self._tokenizer = tokenizer
        self._max_batch_size = max_batch_size
        self._lock = threading.RLock()
        self._active: str | None = None
        self._adapters: dict[str, Path] = {}
        self._eos_ids = _eos_ids(model, tokenizer)
        if not self._eos_ids:
            raise GenerationError("neither the tokenizer nor the model config names an EOS token")
        pad = tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self._eos_ids)
        self._max_positions: int | None = getattr(model.config, "max_position_embeddings", None)

    @property
    def model(self) -> Any:
        """The module used for decoding: the base model, or a ``PeftModel`` around it."""
        return self._model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def active_adapter(self) -> str | None:
        """The adapter applied to every call, or ``None`` for the base model."""
        return self._active

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the loaded adapters, in load order."""
        return tuple(self._adapters)

    def encode(self, request: GenRequest) -> list[int]:
        """The prompt token ids for ``request`` (chat template with generation prompt)."""
        try:
            if request.messages is not None:
                encoded: Any = self._tokenizer.apply_chat_template(
                    request.messages, add_generation_prompt=True, tokenize=True, return_dict=False
                )
            else:
                encoded = self._tokenizer(request.prompt).input_ids
        except (ValueError, KeyError, TypeError) as error:
            raise GenerationError(f"cannot encode the prompt: {describe(error)}") from error
        ids = list(encoded)
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        if not ids:
            raise GenerationError("the prompt encodes to no tokens")
        return [int(token) for token in ids]

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Complete every request; results are in request order.

        Requests are decoded together in left-padded batches of up to ``max_batch_size``.
        Greedy requests are deterministic; sampled ones are reproducible from their seed
        regardless of which other requests share their batch.
        """
        with self._lock, torch.inference_mode():
            rows = [self._row(request) for request in requests]
            for start in range(0, len(rows), self._max_batch_size):
                self._decode(rows[start : start + self._max_batch_size])
            return [self._result(row) for row in rows]

    def score(
        self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *, temperature: float = 1.0
    ) -> list[float]:
        """Log-probability of each completion token given everything before it.

        One forward pass under the active adapter, over ``log_softmax(logits / temperature)``
        (``temperature`` 0 is read as 1, the greedy convention). It equals the recorded
        ``Generation.logprobs`` for greedy and for ``top_p == 1`` sampling at the same
        temperature, up to float noise.
        """
        if not prompt_ids:
            raise GenerationError("score needs at least one prompt token")
        if not completion_ids:
            return []
        if temperature < 0:
            raise GenerationError(f"temperature must be >= 0, got {temperature}")
        scale = temperature if temperature > 0 else 1.0
        ids = torch.tensor([[*prompt_ids, *completion_ids]], device=self._device)  # (1, P+C)
        targets = torch.tensor(list(completion_ids), device=self._device)  # (C,)
        with self._lock, torch.inference_mode():
            # The last C+1 positions predict the C completion tokens and one token past them.
            logits = self._model(input_ids=ids, logits_to_keep=len(completion_ids) + 1).logits
            logits = logits[0, :-1].float() / scale  # (C, V)
            logprobs = torch.log_softmax(logits, dim=-1)
            return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).tolist()

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a saved peft LoRA adapter under ``name``; the active adapter does not change.

        A failed load leaves the policy as it was: any layers peft injected are removed.
        """
        from peft import PeftModel

        directory = Path(path)
        if not name:
            raise AdapterError("adapter name must not be empty")
        if not (directory / "adapter_config.json").is_file():
            raise AdapterError(f"{directory} is not a peft adapter (no adapter_config.json)")
        if not any((directory / weights).is_file() for weights in _ADAPTER_WEIGHTS):
            raise AdapterError(
                f"{directory} has no adapter weights ({', '.join(_ADAPTER_WEIGHTS)})"
            )
        with self._lock:
            if name in self._adapters:
                raise AdapterError(f"an adapter named {name!r} is already loaded")
            try:
                if isinstance(self._model, PeftModel):
                    self._model.load_adapter(str(directory), adapter_name=name)
                else:
                    self._model = PeftModel.from_pretrained(
                        self._base, str(directory), adapter_name=name
                    )
            # peft, safetensors and torch each raise their own exception types for a bad
            # adapter; all of them mean the same thing to the caller.
            except Exception as error:
                self._discard_partial(name)
                raise AdapterError(
                    f"cannot load adapter {name!r} from {directory}: {describe(error)}"
                ) from error
            self._model.eval()
            self._adapters[name] = directory
            self._apply_active()

    def set_adapter(self, name: str | None) -> None:
        """Apply adapter ``name`` to later calls; ``None`` returns to the base model."""
        with self._lock:
            if name is not None and name not in self._adapters:
                raise AdapterError(f"no adapter named {name!r} is loaded ({self._known()})")
            self._active = name
            self._apply_active()

    def unload_adapter(self, name: str) -> None:
        """Remove adapter ``name``; if it was active the base model becomes active."""
        with self._lock:
            if name not in self._adapters:
                raise AdapterError(f"no adapter named {name!r} is loaded ({self._known()})")
            if len(self._adapters) == 1:
                # The last adapter: strip the LoRA layers so the bare base model runs again.
                self._base = self._model.unload()
                self._model = self._base
            else:
                if self._model.active_adapter == name:
                    # peft re-points its own active adapter (with a warning) if we delete it.
                    self._model.set_adapter(next(n for n in self._adapters if n != name))
                self._model.delete_adapter(name)
            del self._adapters[name]
            if self._active == name:
                self._active = None
            self._apply_active()

    def _discard_partial(self, name: str) -> None:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer

        if isinstance(self._model, PeftModel):
            if name in self._model.peft_config:
                self._model.delete_adapter(name)
            self._apply_active()
            return
        # The first adapter failed after peft injected its layers into the base model:
        # put the original modules back.
        for module_name, module in list(self._base.named_modules()):
            if isinstance(module, BaseTunerLayer):
                parent_name, _, child = module_name.rpartition(".")
                parent = self._base.get_submodule(parent_name)
                setattr(parent, child, module.get_base_layer())

    def _apply_active(self) -> None:
        if not self._adapters:
            return
        tuner = self._model.base_model
        if self._active is None:
            tuner.disable_adapter_layers()
        else:
            self._model.set_adapter(self._active)
            tuner.enable_adapter_layers()

    def _known(self) -> str:
        return "loaded: " + (", ".join(self._adapters) or "none")

    def _row(self, request: GenRequest) -> _Row:
        if not isinstance(request, GenRequest):
            raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        prompt_ids = self.encode(request)
        budget = request.max_tokens
        if self._max_positions is not None:
            room = self._max_positions - len(prompt_ids)
            if room < 1:
                raise GenerationError(
                    f"prompt of {len(prompt_ids)} tokens leaves no room in the model's "
                    f"{self._max_positions}-token context"
                )
            budget = min(budget, room)
        seed: int | None = request.seed
        generator = None
        if not request.greedy:
            if seed is None:
                seed = secrets.randbits(63)
            generator = torch.Generator(device=self._device)
            generator.manual_seed(seed)
        return _Row(request, prompt_ids, budget, seed, generator)

    def _decode(self, rows: list[_Row]) -> None:
        width = max(len(row.prompt_ids) for row in rows)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)  # (B, L)
        attention = torch.zeros((len(rows), width), dtype=torch.long)  # (B, L)
        for index, row in enumerate(rows):
            input_ids[index, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
            attention[index, width - len(row.prompt_ids) :] = 1
        input_ids = input_ids.to(self._device)
        attention = attention.to(self._device)
        # Left padding shifts each row; positions count real tokens only, so a padded row
        # sees the same rotary positions it would unpadded.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        temperature = torch.tensor([row.request.temperature for row in rows], device=self._device)
        top_p = torch.tensor([row.request.top_p for row in rows], device=self._device)

        output = self._model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = output.past_key_values
        logits = output.logits[:, -1, :]  # (B, V)
        next_position = positions[:, -1] + 1  # (B,)
        live = list(range(len(rows)))  # batch index -> row index, shrinks as rows finish
        while True:
            tokens, logprobs = next_tokens(
                logits, temperature, top_p, [rows[i].generator for i in live]
            )
            for slot, index in enumerate(live):
                self._advance(rows[index], int(tokens[slot]), float(logprobs[slot]))
            keep = [slot for slot, index in enumerate(live) if not rows[index].done]
            if not keep:
                return
            if len(keep) < len(live):
                # Drop finished rows from the batch so long stragglers do not pay for them.
                selector = torch.tensor(keep, device=self._device)
                cache.batch_select_indices(selector)
                tokens, attention = tokens[selector], attention[selector]
                next_position, temperature, top_p = (
                    next_position[selector],
                    temperature[selector],
                    top_p[selector],
                )
                live = [live[slot] for slot in keep]
            attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=-1)
            output = self._model(
                input_ids=tokens.unsqueeze(-1),  # (B', 1)
                attention_mask=attention,  # (B', L + t)
                position_ids=next_position.unsqueeze(-1),  # (B', 1)
                past_key_values=cache,
                use_cache=True,
            )
            cache = output.past_key_values
            logits = output.logits[:, -1, :]
            next_position = next_position + 1

    def _advance(self, row: _Row, token: int, logprob: float) -> None:
        row.completion_ids.append(token)
        row.logprobs.append(logprob)
        if token in self._eos_ids:
            # EOS need not be a special token (a config may list extra ones): cut it here so
            # the text never shows it, while completion_ids keep it for training.
            row.text = self._decode_text(row.completion_ids[:-1])
            row.finish_reason, row.done = "stop", True
            return
        if row.request.stop:
            text = self._decode_text(row.completion_ids)
            cut = min((text.find(s) for s in row.request.stop if s in text), default=-1)
            if cut >= 0:
                row.text, row.finish_reason, row.done = text[:cut], "stop", True
                return
        if len(row.completion_ids) >= row.budget:
            row.done = True

    def _decode_text(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def _result(self, row: _Row) -> Generation:
        text = row.text if row.text is not None else self._decode_text(row.completion_ids)
        prompt, completion = len(row.prompt_ids), len(row.completion_ids)
        return Generation(
            text=text,
            prompt_ids=row.prompt_ids,
            completion_ids=row.completion_ids,
            logprobs=row.logprobs,
            finish_reason=row.finish_reason,
            usage=Usage(prompt, completion, prompt + completion),
            seed=row.seed,
            adapter=self._active,
        )


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
