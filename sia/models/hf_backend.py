"""The in-process transformers policy backend, with hot-swappable LoRA adapters.

Decoding is a hand-written loop over the model's KV cache rather than ``model.generate``:
``generate`` draws every row from one global RNG, so a request's sample would depend on
what else was in its batch, and its scores are post-processed in ways that make "the
logprob of the sampled token" ambiguous. Here each request has its own seeded generator and
its logprobs come from exactly the distribution it was sampled from.

The loop also batches continuously: a finished row leaves the batch at once and a waiting
request is prefilled and merged into the running KV cache (left-padded, masked), so the
batch stays full while requests keep arriving (:meth:`HFPolicy.generate_continuous`).
"""

from __future__ import annotations

import itertools
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sia.models.errors import AdapterError, GenerationError, describe
from sia.models.generation import FinishReason, Generation, GenRequest, Usage, encode_prompt
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
    index: int = -1  # arrival order in a continuous run


@dataclass
class _Batch:
    """Rows decoding together over one left-padded KV cache.

    ``attention`` (B, T) marks the cached positions that hold a row's real tokens (left
    padding is 0); ``positions`` (B,) is the rotary position of each row's next input token;
    ``logits`` (B, V) are the scores of each row's next token, not yet sampled.
    """

    rows: list[_Row]
    cache: Any
    attention: torch.Tensor
    positions: torch.Tensor
    temperature: torch.Tensor
    top_p: torch.Tensor
    logits: torch.Tensor


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
        #: Continuous batching: free places x decode steps that rows waiting to join a
        #: running batch may leave unused before they are prefilled (see ``_run``).
        self.admit_after = max_batch_size // 2
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
            self._run(list(rows))
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
            waiting: list[_Row] = []

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
            self._run(
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

    def _run(
        self,
        waiting: list[_Row],
        *,
        refill: Callable[[int], None] | None = None,
        report: Callable[[_Row], None] | None = None,
    ) -> None:
        """Decode ``waiting`` rows, up to ``max_batch_size`` at a time, until none is left.

        Before every step, free places go to waiting rows (``refill(n)`` may first append up
        to ``n`` more); they are prefilled and merged into the running batch. Models whose
        cache cannot be merged only start new rows once the batch has drained.

        A prefill is a forward pass of its own whose cost hardly depends on how many rows it
        holds, so while more rows may still arrive (``refill`` given), rows joining a
        running batch are gathered: they are let in once they fill every free place, or
        once free places have gone unused for ``admit_after`` row-steps.
        """
        batch: _Batch | None = None
        unused = 0  # free places x steps while rows waited to join
        while True:
            room = self._max_batch_size - (len(batch.rows) if batch is not None else 0)
            if refill is not None and room > len(waiting):
                refill(room - len(waiting))
            if waiting and room > 0 and (batch is None or _mergeable(batch.cache)):
                if (
                    batch is None
                    or refill is None
                    or len(waiting) >= room
                    or unused >= self.admit_after
                ):
                    fresh = self._prefill(waiting[:room])
                    del waiting[:room]
                    batch = fresh if batch is None else _merge(batch, fresh)
                    unused = 0
                else:
                    unused += room
            if batch is None:
                return
            batch = self._step(batch, report)

    def _prefill(self, rows: list[_Row]) -> _Batch:
        width = max(len(row.prompt_ids) for row in rows)
        padded = [[self._pad_id] * (width - len(row.prompt_ids)) + row.prompt_ids for row in rows]
        mask = [[0] * (width - len(row.prompt_ids)) + [1] * len(row.prompt_ids) for row in rows]
        input_ids = torch.tensor(padded, dtype=torch.long, device=self._device)  # (B, L)
        attention = torch.tensor(mask, dtype=torch.long, device=self._device)  # (B, L)
        # Left padding shifts each row; positions count real tokens only, so a padded row
        # sees the same rotary positions it would unpadded.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        output = self._model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        self._stats["prefills"] += 1
        self._stats["prefill_rows"] += len(rows)
        return _Batch(
            rows=list(rows),
            cache=output.past_key_values,
            attention=attention,
            positions=positions[:, -1] + 1,
            temperature=torch.tensor([r.request.temperature for r in rows], device=self._device),
            top_p=torch.tensor([r.request.top_p for r in rows], device=self._device),
            logits=output.logits[:, -1, :],
        )

    def _step(self, batch: _Batch, report: Callable[[_Row], None] | None) -> _Batch | None:
        """Sample every row's next token; drop finished rows; run one decode step."""
        tokens, logprobs = next_tokens(
            batch.logits, batch.temperature, batch.top_p, [row.generator for row in batch.rows]
        )
        for row, token, logprob in zip(batch.rows, tokens.tolist(), logprobs.tolist(), strict=True):
            self._advance(row, token, logprob)
        keep = [slot for slot, row in enumerate(batch.rows) if not row.done]
        if report is not None and len(keep) < len(batch.rows):
            for row in batch.rows:
                if row.done:
                    report(row)
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            # Drop finished rows from the batch so long stragglers do not pay for them.
            selector = torch.tensor(keep, device=self._device)
            batch.cache.batch_select_indices(selector)
            batch.rows = [batch.rows[slot] for slot in keep]
            tokens, batch.attention = tokens[selector], batch.attention[selector]
            batch.positions = batch.positions[selector]
            batch.temperature, batch.top_p = batch.temperature[selector], batch.top_p[selector]
            _trim(batch)
        batch.attention = torch.cat(
            [batch.attention, batch.attention.new_ones((len(batch.rows), 1))], dim=-1
        )
        output = self._model(
            input_ids=tokens.unsqueeze(-1),  # (B', 1)
            attention_mask=batch.attention,  # (B', T + 1)
            position_ids=batch.positions.unsqueeze(-1),  # (B', 1)
            past_key_values=batch.cache,
            use_cache=True,
        )
        self._stats["steps"] += 1
        self._stats["step_rows"] += len(batch.rows)
        batch.cache = output.past_key_values
        batch.logits = output.logits[:, -1, :]
        batch.positions = batch.positions + 1
        return batch

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


def _mergeable(cache: Any) -> bool:
    """Whether rows of two caches like ``cache`` can be joined (plain per-layer K/V tensors)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(
        type(layer) is DynamicLayer and layer.is_initialized for layer in layers
    )


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """``tensor`` widened to ``length`` along ``dim`` by zeros on the left."""
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _merge(batch: _Batch, fresh: _Batch) -> _Batch:
    """One batch holding the rows of both, ``batch``'s first; caches are left-padded to fit.

    Padded cache positions are masked out, so each row attends to exactly what it did.
    """
    length = max(batch.attention.shape[1], fresh.attention.shape[1])
    for old, new in zip(batch.cache.layers, fresh.cache.layers, strict=True):
        # (B, heads, T, head_dim): the sequence is dim 2.
        old.keys = torch.cat([_left_pad(old.keys, length, 2), _left_pad(new.keys, length, 2)])
        old.values = torch.cat([_left_pad(old.values, length, 2), _left_pad(new.values, length, 2)])
    return _Batch(
        rows=batch.rows + fresh.rows,
        cache=batch.cache,
        attention=torch.cat(
            [_left_pad(batch.attention, length, 1), _left_pad(fresh.attention, length, 1)]
        ),
        positions=torch.cat([batch.positions, fresh.positions]),
        temperature=torch.cat([batch.temperature, fresh.temperature]),
        top_p=torch.cat([batch.top_p, fresh.top_p]),
        logits=torch.cat([batch.logits, fresh.logits]),
    )


def _trim(batch: _Batch) -> None:
    """Drop leading cache positions that are padding for every remaining row."""
    if not _mergeable(batch.cache):
        return
    first = int(batch.attention.any(dim=0).int().argmax())
    if first == 0:
        return
    batch.attention = batch.attention[:, first:]
    for layer in batch.cache.layers:
        layer.keys = layer.keys[:, :, first:]
        layer.values = layer.values[:, :, first:]


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
