"""The job directory: how an orchestrator hands a training to worker processes, and back.

Workers are separate processes (one per rank, started by a launcher), so everything they
need travels as files, and nothing of the orchestrator's — its ledger above all — is
opened by them. One directory per training:

``job.json``
    algorithm, validated config, LoRA settings, seed, base model directory, optional init
    adapter, output directory, device, dtype, threads (written by the orchestrator).
``samples.jsonl``
    one :class:`rl.data.Sample` per line (JSON floats round-trip exactly, so the recorded
    logprobs arrive bit for bit).
``progress``
    one line per finished optimiser step, appended by rank 0 (the orchestrator polls it).
``steps_total``
    how many optimiser steps the training will take, written by rank 0 before the first.
``result.json``
    the :class:`rl.train.TrainResult` fields, written by rank 0 after the adapter.
``error-<rank>.json``
    a failed rank's exception: its type, whether it is an ``RLConfigError``/``RLError``,
    and its message's first line.

Plain Python only (no torch), so writing a job costs the orchestrator nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rl.data import Sample
from rl.errors import RLConfigError, RLError
from rl.lora import LoraSettings

__all__ = [
    "ERROR_PREFIX",
    "JOB_FILE",
    "JOB_FORMAT",
    "PROGRESS_FILE",
    "RESULT_FILE",
    "SAMPLES_FILE",
    "TOTAL_FILE",
    "TrainJob",
    "append_step",
    "read_error",
    "read_job",
    "read_result",
    "read_steps",
    "read_total",
    "write_error",
    "write_job",
    "write_result",
    "write_total",
]

JOB_FORMAT = "sia-train-job/1"
JOB_FILE = "job.json"
SAMPLES_FILE = "samples.jsonl"
PROGRESS_FILE = "progress"
TOTAL_FILE = "steps_total"
RESULT_FILE = "result.json"
ERROR_PREFIX = "error-"


@dataclass(frozen=True)
class TrainJob:
    """Everything but the samples that a worker passes to ``train_lora``.

    ``config`` is the algorithm's full validated config (``AlgorithmConfig.to_dict()``);
    ``device`` is ``cpu`` or ``cuda`` (each rank then takes ``cuda:LOCAL_RANK``);
    ``threads`` sets each worker's torch thread count (None: the launcher's default,
    torchrun's ``OMP_NUM_THREADS=1``); ``shard_base`` shards the frozen base among the
    ranks (:mod:`rl.sharding`).
    """

    algorithm: str
    config: dict[str, Any]
    base_model: Path
    out_dir: Path
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 0
    init_adapter: Path | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    shard_base: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JOB_FORMAT,
            "algorithm": self.algorithm,
            "config": self.config,
            "lora": self.lora.to_dict(),
            "seed": self.seed,
            "base_model": str(self.base_model),
            "out_dir": str(self.out_dir),
            "init_adapter": str(self.init_adapter) if self.init_adapter else None,
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "shard_base": self.shard_base,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainJob:
        if data.get("format") != JOB_FORMAT:
            raise RLError(f"not a {JOB_FORMAT} job (format {data.get('format')!r})")
        return cls(
            algorithm=data["algorithm"],
            config=dict(data["config"]),
            lora=LoraSettings(**data["lora"]),
            seed=data["seed"],
            base_model=Path(data["base_model"]),
            out_dir=Path(data["out_dir"]),
            init_adapter=Path(data["init_adapter"]) if data["init_adapter"] else None,
            device=data["device"],
            dtype=data["dtype"],
            threads=data["threads"],
            shard_base=data.get("shard_base", False),
        )


def write_job(job_dir: Path, job: TrainJob, samples: Iterable[Sample]) -> None:
    """Write ``job.json`` and ``samples.jsonl``, clearing what an earlier run left."""
    job_dir.mkdir(parents=True, exist_ok=True)
    for stale in [PROGRESS_FILE, TOTAL_FILE, RESULT_FILE, *_error_files(job_dir)]:
        (job_dir / stale).unlink(missing_ok=True)
    with (job_dir / SAMPLES_FILE).open("w") as out:
        for sample in samples:
            out.write(json.dumps(asdict(sample)) + "\n")
    _write_json(job_dir / JOB_FILE, job.to_json())


def read_job(job_dir: Path) -> tuple[TrainJob, list[Sample]]:
    """The job and its samples; RLError for a missing or malformed directory."""
    try:
        job = TrainJob.from_json(json.loads((job_dir / JOB_FILE).read_text()))
        with (job_dir / SAMPLES_FILE).open() as lines:
            samples = [Sample(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RLError(f"cannot read training job {job_dir}: {error}".splitlines()[0]) from error
    return job, samples


def write_result(job_dir: Path, result: Any) -> None:
    """``result.json`` from a :class:`rl.train.TrainResult` (rank 0, after the adapter)."""
    data = {
        "path": str(result.path),
        "algorithm": result.algorithm,
        "config": result.config,
        "lora": result.lora,
        "metrics": result.metrics,
    }
    _write_json(job_dir / RESULT_FILE, data)


def read_result(job_dir: Path) -> dict[str, Any] | None:
    """The fields of ``result.json``, or None when no rank 0 finished."""
    path = job_dir / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_steps(job_dir: Path) -> int:
    """How many optimiser steps rank 0 has reported finished."""
    try:
        return (job_dir / PROGRESS_FILE).read_text().count("\n")
    except FileNotFoundError:
        return 0


def write_error(job_dir: Path, rank: int, error: BaseException) -> None:
    """Record why rank ``rank`` failed, for the orchestrator to re-raise."""
    lines = str(error).strip().splitlines()
    data = {
        "type": type(error).__name__,
        "kind": (
            "config"
            if isinstance(error, RLConfigError)
            else "rl"
            if isinstance(error, RLError)
            else "other"
        ),
        "message": lines[0] if lines else "",
    }
    _write_json(job_dir / f"{ERROR_PREFIX}{rank}.json", data)


def read_error(job_dir: Path) -> RLError | None:
    """The lowest failed rank's error as the RLError to raise, or None if none was written.

    An ``RLConfigError`` stays one (the caller's setting to fix); an ``RLError`` (e.g. no
    learning signal) stays one; anything else is wrapped, its type named.
    """
    for name in _error_files(job_dir):
        data = json.loads((job_dir / name).read_text())
        if data["kind"] == "config":
            return RLConfigError(data["message"])
        if data["kind"] == "rl":
            return RLError(data["message"])
        return RLError(f"training worker failed: {data['type']}: {data['message']}")
    return None


def write_total(job_dir: Path, total: int) -> None:
    """Rank 0's announcement of how many steps the training takes."""
    _write_json(job_dir / TOTAL_FILE, total)


def read_total(job_dir: Path) -> int | None:
    """The announced number of steps, or None before rank 0 has prepared its items."""
    path = job_dir / TOTAL_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def append_step(job_dir: Path, step: int) -> None:
    """Rank 0's progress: one line per finished step."""
    with (job_dir / PROGRESS_FILE).open("a") as out:
        out.write(f"{step}\n")


def _error_files(job_dir: Path) -> Sequence[str]:
    found = [p.name for p in job_dir.glob(f"{ERROR_PREFIX}*.json")] if job_dir.is_dir() else []
    return sorted(found, key=lambda name: int(name[len(ERROR_PREFIX) : -5] or 0))


def _write_json(path: Path, data: Any) -> None:
    # Written whole then renamed, so a reader polling the directory never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
