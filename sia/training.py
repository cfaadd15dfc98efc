"""The TRAIN effect: LoRA adapters trained on the rollouts the ledger recorded.

The trainer never generates. It reads the iteration's rollout episodes and their calls
(token ids, the logprobs they were sampled with, rewards) back from the ledger, turns
them into :class:`rl.data.Sample` groups (one group per item), and trains a fresh copy of
the base model with the chosen algorithm. The serving model stays untouched, so an adapter
that fails evaluation costs nothing but its training time.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ledger import Recorder
from sia.errors import EffectFailed, NoCandidate, TrainingCancelled
from sia.faults import crash_point
from sia.ports import TrainedAdapter, TrainRequest
from sia.trajectories import Trajectory, read_trajectories
from statemachine.errors import ConfigError

__all__ = ["LoRATrainer", "base_model_digest", "samples_from"]


def samples_from(trajectories: Sequence[Trajectory]) -> list[Any]:
    """One sample per model call of every finished episode; the item is the group.

    Episodes that crashed or timed out say nothing about the policy (the harness failed),
    so they are left out; so are calls whose tokens were not recorded (an ``openai``
    backend without ids). A greedy call's logprobs are the raw distribution's: temperature 1.
    """
    from rl.data import Sample

    samples = []
    for t in trajectories:
        ep = t.episode
        if ep.status != "ok" or ep.reward is None:
            continue
        for call in t.calls:
            if not call.completion_ids or len(call.logprobs) != len(call.completion_ids):
                continue
            samples.append(
                Sample(
                    prompt_ids=tuple(call.prompt_ids),
                    completion_ids=tuple(call.completion_ids),
                    logprobs=tuple(float(x) for x in call.logprobs),
                    reward=float(ep.reward),
                    group=ep.item_id,
                    temperature=call.temperature or 1.0,
                )
            )
    return samples


def base_model_digest(directory: Path) -> str | None:
    """The sha256 of the base weights, from the cache manifest (or by hashing the files)."""
    manifest = directory / "sia-manifest.json"
    if manifest.is_file():
        files = json.loads(manifest.read_text()).get("files", {})
        if "model.safetensors" in files:
            return str(files["model.safetensors"])
    from sia.models.cache import sha256_file

    weights = sorted(directory.glob("*.safetensors"))
    if len(weights) != 1:
        return None
    return sha256_file(weights[0])


class LoRATrainer:
    """A :class:`~sia.ports.Trainer` on the ``hf`` backend; a context manager.

    ``load_base`` returns a fresh ``(model, tokenizer)`` of the base for each training, so
    nothing trained leaks into the model that serves rollouts. ``run_on_model_thread(fn)``
    runs the training (``Gateway.on_model_thread``): see there why all model work of a
    process belongs on one thread. Adapters are written under a
    private temporary folder; the orchestrator stores a copy, and the folder goes at close.
    """

    def __init__(
        self,
        recorder: Recorder,
        load_base: Callable[[], tuple[Any, Any]],
        *,
        base_model: str,
        base_digest: str | None,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        run_on_model_thread: Callable[[Callable[[], Any]], Any] | None = None,
        train_processes: int = 1,
        shard_base: bool = False,
        base_dir: Path | None = None,
        device: str = "cpu",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None:
        from rl.lora import LoraSettings

        self._recorder = recorder
        self._load_base = load_base
        self._base_model = base_model
        self._base_digest = base_digest
        self._lora = LoraSettings(rank=lora_rank, alpha=lora_alpha)
        self._overrides = {name: dict(values) for name, values in (overrides or {}).items()}
        if train_processes > 1 and base_dir is None:
            raise ConfigError("training on several processes needs the base model's directory")
        self._processes = train_processes
        self._shard_base = shard_base
        self._base_dir = base_dir
        self._device = device
        self._progress = progress
        self._root = Path(tempfile.mkdtemp(prefix="sia-train-"))
        self._run = run_on_model_thread or (lambda fn: fn())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def train(self, request: TrainRequest) -> TrainedAdapter:
        from rl.errors import RLConfigError, RLError
        from rl.train import train_lora

        algorithm = request.decision.algorithm
        if not algorithm:
            raise EffectFailed(f"iteration {request.iteration}: the decision names no algorithm")
        found = read_trajectories(
            self._recorder, request.run_id, iteration=request.iteration, purpose="rollout"
        )
        samples = samples_from(found)
        if not samples:
            raise NoCandidate(
                f"iteration {request.iteration}: no finished rollout episode with recorded "
                "tokens to train on"
            )
        out = self._root / f"{request.run_id}-{request.iteration}"
        shutil.rmtree(out, ignore_errors=True)
        cancelled = threading.Event()
        planned: dict[str, int] = {}

        def step_done(step: int) -> None:
            crash_point("after-train-step")
            if self._progress is not None:
                self._progress(step, planned.get("steps"))
            if cancelled.is_set():
                raise TrainingCancelled(f"training stopped after step {step}")

        def fit() -> Any:
            model, tokenizer = self._load_base()
            return train_lora(
                model,
                tokenizer,
                samples,
                algorithm,
                config=self._overrides.get(algorithm),
                lora=self._lora,
                seed=request.seed,
                init_adapter=request.base_adapter_path,
                out_dir=out,
                device=self._device,
                on_step=step_done,
                on_start=lambda total: planned.update(steps=total),
            )

        def fit_distributed() -> Any:
            # Workers are processes of their own: they load the base from disk and never
            # see the ledger; only rank 0 writes the adapter, which comes back here.
            from rl.launch import train_distributed

            assert self._base_dir is not None  # checked in __init__
            return train_distributed(
                out.with_name(out.name + "-job"),
                self._processes,
                samples=samples,
                algorithm=algorithm,
                base_model=self._base_dir,
                config=self._overrides.get(algorithm),
                lora=self._lora,
                seed=request.seed,
                init_adapter=request.base_adapter_path,
                out_dir=out,
                device=self._device,
                shard_base=self._shard_base,
                on_step=step_done,
                on_start=lambda total: planned.update(steps=total),
            )

        try:
            result = fit_distributed() if self._processes > 1 else self._run(fit)
        except RLConfigError:
            raise  # a bad setting is the user's to fix, not a lack of signal
        except RLError as error:
            # No usable signal (e.g. every group scored alike): no adapter, not a crash.
            raise NoCandidate(str(error)) from error
        except KeyboardInterrupt:
            # Ctrl-C reached this waiting thread: the model thread stops at its next step.
            cancelled.set()
            raise
        return TrainedAdapter(
            path=result.path,
            algorithm=result.algorithm,
            base_model=self._base_model,
            config={
                "algorithm": result.config,
                "lora": result.lora,
                "base_model_sha256": self._base_digest,
                "samples": len(samples),
                "groups": len({s.group for s in samples}),
            },
            metrics=result.metrics,
        )
