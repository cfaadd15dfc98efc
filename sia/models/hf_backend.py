"""The in-process transformers policy backend, with hot-swappable LoRA adapters.

Decoding is a hand-written loop over the model's KV cache rather than ``model.generate``:
``generate`` draws every row from one global RNG, so a request's sample would depend on
what else was in its batch, and its scores are post-processed in ways that make "the
logprob of the sampled token" ambiguous. Here each request has its own seeded generator and
its logprobs come from exactly the distribution it was sampled from.

The loop also batches continuously: a finished row leaves the batch at once and a waiting
request joins the next forward pass, so the batch stays full while requests keep arriving
(:meth:`HFPolicy.generate_continuous`; the loops themselves are in
:mod:`sia.models.decoding`).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sia.models.decoding import Row, decode_packed, decode_padded, packable
from sia.models.errors import AdapterError, GenerationError, PromptTooLong, describe
from sia.models.generation import Generation, GenRequest, Usage, encode_prompt

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["HFPolicy"]

_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


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
        packed: bool | None = None,
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
        self._stats = {"prefills": 0, "prefill_rows": 0, "steps": 0, "step_rows": 0}
        can_pack = packable(self._base)
        if packed and not can_pack:
            raise GenerationError(
                "this model cannot decode packed (it needs full attention with sdpa or eager)"
            )
        self._packed = can_pack if packed is None else packed

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
    def eos_ids(self) -> frozenset[int]:
        """Token ids that end a completion (model config, generation config, tokenizer)."""
        return self._eos_ids

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
        ids = encode_prompt(self._tokenizer, request)
        if not ids:
            raise GenerationError("the prompt encodes to no tokens")
        return [int(token) for token in ids]

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        """Complete every request; results are in request order.

        Requests are decoded together in left-padded batches of up to ``max_batch_size``;
        when a row finishes, the next waiting request takes its place. Greedy requests are
        deterministic; sampled ones are reproducible from their seed regardless of which
        other requests share their batch.
        """
        with self._lock, torch.inference_mode():
            rows = [self._row(request) for request in requests]
            self._decode(list(rows))
            return [self._result(row) for row in rows]

    def generate_continuous(
        self,
        requests: Sequence[GenRequest],
        admit: Callable[[int], Sequence[GenRequest]],
        finished: Callable[[int, Generation | GenerationError], None],
    ) -> None:
        """Continuous batching: decode ``requests``, admitting more while decoding.

        Between decode steps ``admit(room)`` is asked for up to ``room`` more requests; it
        must not block. Admitted requests are prefilled and join the running batch, so the
        batch stays full while callers keep sending. Requests are numbered in arrival order
        (``requests`` first, then each admitted one) and ``finished(index, result)`` is
        called as soon as request ``index`` completes, with its :class:`Generation`, or with
        a :class:`GenerationError` when that request alone cannot run (say its prompt does
        not fit the context). Returns once nothing is decoding and ``admit`` offers nothing.
        An error of the model itself propagates; unfinished requests then get no call.

        A request's result is the one :meth:`generate` gives it: the same greedy tokens, the
        same seeded samples, whatever joins or leaves the batch around it. The policy's lock
        is held for the whole run, so an adapter switch from another thread waits until the
        run ends; the gateway's batcher ends admission as soon as it has one queued.
        """
        with self._lock, torch.inference_mode():
            arrivals = itertools.count()
            waiting: list[Row] = []

            def take(incoming: Sequence[GenRequest]) -> None:
                for request in incoming:
                    index = next(arrivals)
                    try:
                        row = self._row(request)
                    except GenerationError as error:
                        finished(index, error)
                        continue
                    row.index = index
                    waiting.append(row)

            take(requests)
            self._decode(
                waiting,
                refill=lambda room: take(admit(room)),
                report=lambda row: finished(row.index, self._result(row)),
            )

    @property
    def decode_stats(self) -> dict[str, int]:
        """Forward passes so far: ``prefills`` and decode ``steps``, and the rows in them."""
        return dict(self._stats)

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

    def _row(self, request: GenRequest) -> Row:
        if not isinstance(request, GenRequest):
            raise GenerationError(f"expected GenRequest, got {type(request).__name__}")
        prompt_ids = self.encode(request)
        budget = request.max_tokens
        if self._max_positions is not None:
            room = self._max_positions - len(prompt_ids)
            if room < 1:
                raise PromptTooLong(
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
        return Row(request, prompt_ids, budget, seed, generator)

    @property
    def packed(self) -> bool:
        """Whether decoding packs every row into one sequence (see :mod:`sia.models.decoding`)."""
        return self._packed

    def _decode(
        self,
        waiting: list[Row],
        *,
        refill: Callable[[int], None] | None = None,
        report: Callable[[Row], None] | None = None,
    ) -> None:
        common = {
            "max_batch": self._max_batch_size,
            "advance": self._advance,
            "stats": self._stats,
            "refill": refill,
            "report": report,
        }
        if self._packed:
            decode_packed(self._model, waiting, **common)
        else:
            decode_padded(self._model, waiting, pad_id=self._pad_id, **common)

    def _advance(self, row: Row, token: int, logprob: float) -> None:
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

    def _result(self, row: Row) -> Generation:
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
