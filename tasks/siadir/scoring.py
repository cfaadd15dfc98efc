"""Scoring a submission with a SIA-format task's own ``evaluate.py``, restricted to some items.

The evaluator finds its labels relative to its own file (``data/private`` next to
``data/public``), so it runs from a private copy of the task whose label files hold only
the items being scored; a submission for one item is then scored as one item, and the
metric it writes is that episode's reward. The evaluator is task code, not agent code: it
runs in its own process, with a time limit and an environment without secrets, and never
in an episode's sandbox.

An evaluator that fails on a submission (raises, exits non-zero, hangs past its time, or
writes no usable metric) scores that submission nothing, with the reason: one episode
fails, not the run. :class:`~tasks.siadir.DirTask` stops the run once it is clear the
evaluator never works. Its time limit covers the processes it starts (they are killed with
it), and what it prints is not kept beyond the last lines of stderr, so an evaluator
printing without end can neither outlive its limit nor fill the orchestrator's memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tasks.siadir.layout import TaskDir, TaskDirError

__all__ = ["METRIC_KEYS", "Evaluation", "evaluate_submission"]

#: results.json keys read as the metric when the task names none, in this order.
METRIC_KEYS: tuple[str, ...] = ("accuracy", "score", "metric", "mean_score")
_SECTIONS = ("summary", "metrics")
_MAX_FILE_BYTES = 8 << 20
#: How much of the end of an evaluator's stderr is kept, for the reason of a failure.
_STDERR_TAIL_BYTES = 16 << 10
_READER_GRACE_S = 2.0


@dataclass(frozen=True)
class Evaluation:
    """What the evaluator made of a submission: the metric, or why there is none."""

    metric: float | None
    reason: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def evaluate_submission(task: TaskDir, ids: set[str], files: dict[str, str]) -> Evaluation:
    """Run ``task``'s evaluator on ``files`` (relative path → text) as a gen dir for ``ids``.

    A submission the evaluator does not score (it exits non-zero, runs out of time, or
    writes no usable ``results.json``) gets no metric, with the reason. An evaluator that
    cannot even import its dependencies here raises :class:`TaskDirError`: no submission
    could ever be scored.
    """
    with tempfile.TemporaryDirectory(prefix="sia-eval-") as scratch:
        root = Path(scratch)
        copy = _task_copy(task, ids, root / "task")
        gen = root / "gen"
        gen.mkdir()
        problem = _write_submission(gen, files)
        if problem:
            return Evaluation(None, problem)
        evaluator = copy / "data" / "public" / "evaluate.py"
        command = [sys.executable, "-E", "-s", str(evaluator), "--gen-dir", str(gen)]
        code, stderr = _run(command, copy, _clean_env(root), task.timeout_s)
        if code is None:
            return Evaluation(None, f"evaluator: no result within {task.timeout_s:g}s")
        if code != 0:
            last = _last_line(stderr)
            if last.startswith("ModuleNotFoundError"):
                # Not the submission's fault: the evaluator cannot run on this machine.
                raise TaskDirError(
                    f"SIA task dir {task.root}: evaluate.py cannot run here: {last} "
                    "(pip install 'sia[sia-tasks]' brings pandas and numpy)"
                )
            return Evaluation(None, f"evaluator: {_exit(code)}: {last}")
        return _read_results(task, gen / "results.json")


def _run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[int | None, str]:
    """Run the evaluator; its exit code (``None``: out of time) and the end of its stderr.

    It leads a process group of its own, so that what it started dies with it when it
    overruns; stdout is dropped (``results.json`` is its answer) and stderr read as it
    comes, keeping only the tail, so that neither can fill a pipe or the memory.
    """
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    tail: deque[bytes] = deque()
    reader = threading.Thread(target=_keep_tail, args=(process.stderr, tail), daemon=True)
    reader.start()
    try:
        code: int | None = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        # The group goes in any case: a child left behind by an evaluator that exited holds
        # its stderr open, and would keep running on the machine.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        # A process that left the group (setsid) may hold stderr open: do not wait for it.
        reader.join(timeout=_READER_GRACE_S)
    kept = b"" if reader.is_alive() else b"".join(tail)
    return code, kept.decode("utf-8", "replace")


def _keep_tail(stream: IO[bytes], tail: deque[bytes]) -> None:
    size = 0
    while chunk := os.read(stream.fileno(), 1 << 14):
        tail.append(chunk)
        size += len(chunk)
        while size - len(tail[0]) >= _STDERR_TAIL_BYTES:
            size -= len(tail.popleft())
    stream.close()


def _exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited {code}"


def _task_copy(task: TaskDir, ids: set[str], dest: Path) -> Path:
    public, private = dest / "data" / "public", dest / "data" / "private"
    public.mkdir(parents=True)
    shutil.copyfile(task.evaluator, public / "evaluate.py")
    for relative, data in task.shared.items():
        _write(public / relative, data)
    _write(public / task.items.path.relative_to(task.public), task.items.subset(ids))
    source = task.root / "data" / "private"
    subsets = {records.path: records for records in task.private}
    for path in sorted(source.rglob("*")):
        if path.is_file():
            records = subsets.get(path)
            data = records.subset(ids) if records else path.read_bytes()
            _write(private / path.relative_to(source), data)
    return dest


def _write_submission(gen: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            return f"submission: unsafe file name {name!r}"
        data = text.encode("utf-8")
        if len(data) > _MAX_FILE_BYTES:
            return f"submission: {name} is over {_MAX_FILE_BYTES >> 20} MB"
        _write(gen / relative, data)
    return ""


def _read_results(task: TaskDir, path: Path) -> Evaluation:
    """The metric of ``results.json``, or why there is none (each reason names the fix)."""
    if not path.is_file():
        return Evaluation(None, "evaluator: exited 0 but wrote no results.json")
    if path.stat().st_size > _MAX_FILE_BYTES:
        return Evaluation(None, f"evaluator: results.json is over {_MAX_FILE_BYTES >> 20} MB")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        first = " ".join(str(error).split())[:200]
        return Evaluation(None, f"evaluator: results.json is not JSON ({first})")
    if not isinstance(results, dict):
        return Evaluation(None, "evaluator: results.json is not a JSON object")
    key, value = _metric(results, task.metric)
    if key is None:
        wanted = task.metric or " / ".join(METRIC_KEYS)
        return Evaluation(
            None,
            f"evaluator: results.json has no metric {wanted!r}; "
            'name its key in sia-task.json: {"metric": "KEY"}',
            results,
        )
    number = isinstance(value, int | float) and math.isfinite(value)
    scaled = value * task.metric_scale if number else None
    if scaled is None or not 0.0 <= scaled <= 1.0:
        shown = repr(value)[:100]
        return Evaluation(
            None,
            f"evaluator: results.json metric {key}={shown} (scale {task.metric_scale:g}) is "
            'not a number in [0, 1]; set its scale in sia-task.json: {"metric_scale": 0.01}',
            results,
        )
    return Evaluation(float(scaled), "", results)


def _metric(results: dict[str, Any], name: str | None) -> tuple[str | None, Any]:
    scopes = [results, *(results[s] for s in _SECTIONS if isinstance(results.get(s), dict))]
    for key in (name,) if name else METRIC_KEYS:
        for scope in scopes:
            if key in scope:
                return key, scope[key]
    return None, None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _clean_env(home: Path) -> dict[str, str]:
    keep = {"PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), PYTHONDONTWRITEBYTECODE="1", PYTHONIOENCODING="utf-8")
    return env


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"
