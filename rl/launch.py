"""``train_distributed``: ``train_lora`` on several processes, from the orchestrator's side.

The orchestrator writes a job directory (:mod:`rl.job`), starts ``torchrun`` (PyTorch's
``torch.distributed.run``) with ``processes`` copies of :mod:`rl.worker`, follows rank 0's
progress, and reads the result back. The orchestrator never joins the process group and
the workers never see the ledger, so the ledger keeps its single writer.

Why torchrun rather than ``accelerate launch``: on CPU, ``accelerate launch --cpu`` starts
one process (several need MPI), and ``--multi_gpu`` is torchrun underneath anyway;
``--standalone`` makes torchrun pick a free rendezvous port itself, so concurrent trainings
never race for ``MASTER_PORT``. The worker runs as well under ``accelerate launch
--multi_gpu`` (see :mod:`rl.worker`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import rl
from rl.algorithms.base import AlgorithmConfig
from rl.data import Sample
from rl.errors import RLConfigError, RLError
from rl.job import TrainJob, read_error, read_result, read_steps, read_total, write_job
from rl.lora import LoraSettings
from rl.registry import algorithm_config, get_algorithm

if TYPE_CHECKING:
    from rl.train import TrainResult  # torch comes with it: imported when training starts

__all__ = ["STDERR_FILE", "STDOUT_FILE", "train_distributed"]

STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
_POLL_SECONDS = 0.2
# Where torchrun's own failure report starts, and its opening notice.
_LAUNCHER_REPORT = re.compile(r"torch/distributed/elastic/|ChildFailedError")
_OMP_BANNER = "Setting OMP_NUM_THREADS"


def train_distributed(
    job_dir: Path,
    processes: int,
    *,
    samples: Sequence[Sample],
    algorithm: str,
    base_model: Path,
    config: Mapping | AlgorithmConfig | None = None,
    lora: LoraSettings = LoraSettings(),  # noqa: B008 — frozen, so sharing is safe
    seed: int = 0,
    init_adapter: Path | None = None,
    out_dir: Path | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = None,
    shard_base: bool = False,
    timeout: float = 6 * 3600,
    on_step: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train like :func:`rl.train.train_lora`, on ``processes`` data-parallel workers.

    ``base_model`` is a local model directory each worker loads (``dtype``, on ``device``:
    ``cpu``, or ``cuda`` for one GPU per process); ``out_dir`` defaults to
    ``job_dir / "adapter"``. With the same samples and seed the adapter equals the
    single-process one (see :mod:`rl.distributed`). ``shard_base`` shards the frozen base
    among the workers instead of giving each a whole copy (:mod:`rl.sharding`).

    ``on_step(n)`` is called here as rank 0 reports step ``n`` (polled, so possibly late and
    several at once); an exception it raises stops the workers and propagates, as does
    reaching ``timeout`` seconds (RLError). ``on_start(total)`` hears rank 0's step count
    once it is known.

    Raises RLConfigError for a bad algorithm or setting (checked before anything starts)
    and RLError for whatever made a worker fail, with that failure's one-line message.
    """
    from rl.train import TrainResult

    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise RLConfigError(f"processes must be a positive int, got {processes!r}")
    if shard_base and processes < 2:
        raise RLConfigError("shard_base needs at least 2 processes")
    resolved = _resolve_config(algorithm, config)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RLConfigError(f"seed must be a non-negative int, got {seed!r}")
    samples = list(samples)
    if not samples:
        raise RLError(f"{algorithm}: no samples to train on")
    job_dir = Path(job_dir).resolve()
    out = Path(out_dir).resolve() if out_dir is not None else job_dir / "adapter"
    job = TrainJob(
        algorithm=algorithm,
        config=resolved.to_dict(),
        lora=lora,
        seed=seed,
        base_model=Path(base_model).resolve(),
        out_dir=out,
        init_adapter=Path(init_adapter).resolve() if init_adapter else None,
        device=device,
        dtype=dtype,
        threads=threads,
        shard_base=shard_base,
    )
    write_job(job_dir, job, samples)
    returncode = _run(job_dir, _command(job_dir, processes), timeout, on_step, on_start)
    found = read_result(job_dir)
    if returncode != 0 or found is None:
        raise read_error(job_dir) or RLError(
            f"training workers exited with status {returncode}: {_last_stderr_line(job_dir)}"
        )
    return TrainResult(
        path=Path(found["path"]),
        algorithm=found["algorithm"],
        config=found["config"],
        lora=found["lora"],
        metrics=found["metrics"],
    )


def _resolve_config(algorithm: str, config: Mapping | AlgorithmConfig | None) -> AlgorithmConfig:
    if isinstance(config, AlgorithmConfig):
        expected = get_algorithm(algorithm).Config
        if type(config) is not expected:
            raise RLConfigError(
                f"config is a {type(config).__name__}, but {algorithm} takes a {expected.__name__}"
            )
        return config
    return algorithm_config(algorithm, config)


def _command(job_dir: Path, processes: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(processes),
        "-m",
        "rl.worker",
        "--job",
        str(job_dir),
    ]


def _run(
    job_dir: Path,
    command: list[str],
    timeout: float,
    on_step: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None = None,
) -> int:
    """Run the launcher, relaying progress; stop its whole process group on any exit."""
    env = dict(os.environ)
    # The workers must import this very ``rl``, wherever the orchestrator runs from.
    root = str(Path(rl.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    deadline = time.monotonic() + timeout
    reported = 0
    with (
        (job_dir / STDOUT_FILE).open("wb") as stdout,
        (job_dir / STDERR_FILE).open("wb") as stderr,
    ):
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
        try:
            while True:
                finished = process.poll() is not None
                if on_start is not None and (total := read_total(job_dir)) is not None:
                    on_start(total)
                    on_start = None
                reported = _relay(job_dir, reported, on_step)
                if finished:
                    return process.returncode
                if time.monotonic() > deadline:
                    raise RLError(f"distributed training timed out after {timeout:g} s")
                time.sleep(_POLL_SECONDS)
        finally:
            if process.poll() is None:
                _stop(process)


def _relay(job_dir: Path, reported: int, on_step: Callable[[int], None] | None) -> int:
    if on_step is None:
        return reported
    steps = read_steps(job_dir)
    for step in range(reported + 1, steps + 1):
        on_step(step)
    return max(reported, steps)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the launcher's session (torchrun and its workers), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_stderr_line(job_dir: Path) -> str:
    """The workers' last informative stderr line, or else the launcher's failure summary.

    torchrun ends a failure with its own traceback and a report box, and begins by
    announcing ``OMP_NUM_THREADS``; neither says what went wrong in the worker.
    """
    try:
        lines = (job_dir / STDERR_FILE).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "no error output"
    cut = next((i for i, line in enumerate(lines) if _LAUNCHER_REPORT.search(line)), len(lines))
    said = [
        line.strip()
        for line in lines[:cut]
        if any(ch.isalnum() for ch in line) and not line.startswith(_OMP_BANNER)
    ]
    if said:
        return said[-1]
    summary = next((line for line in lines if "failed (exitcode" in line), None)
    return summary.split("] ", 1)[-1].strip() if summary else "no error output"
