"""Scoring a submission with a SIA-format task's own ``evaluate.py``, restricted to some items.

The evaluator finds its labels relative to its own file (``data/private`` next to
``data/public``), so it runs from a private copy of the task whose label files hold only
the items being scored; a submission for one item is then scored as one item, and the
metric it writes is that episode's reward. The evaluator is task code, not agent code: it
runs in its own process, with a time limit and an environment without secrets, and never
in an episode's sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tasks.siadir.layout import TaskDir, TaskDirError

__all__ = ["METRIC_KEYS", "Evaluation", "evaluate_submission"]

#: results.json keys read as the metric when the task names none, in this order.
METRIC_KEYS: tuple[str, ...] = ("accuracy", "score", "metric", "mean_score")
_SECTIONS = ("summary", "metrics")
_MAX_FILE_BYTES = 8 << 20


@dataclass(frozen=True)
class Evaluation:
    """What the evaluator made of a submission: the metric, or why there is none."""

    metric: float | None
    reason: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def evaluate_submission(task: TaskDir, ids: set[str], files: dict[str, str]) -> Evaluation:
    """Run ``task``'s evaluator on ``files`` (relative path → text) as a gen dir for ``ids``.

    A submission the evaluator rejects (non-zero exit) scores no metric, with its reason;
    an evaluator that exits 0 yet writes no usable ``results.json`` is a broken task and
    raises :class:`TaskDirError`.
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
        try:
            done = subprocess.run(
                [sys.executable, "-E", "-s", str(evaluator), "--gen-dir", str(gen)],
                cwd=copy,
                env=_clean_env(root),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=task.timeout_s,
            )
        except subprocess.TimeoutExpired:
            return Evaluation(None, f"evaluator: no result within {task.timeout_s:g}s")
        if done.returncode != 0:
            last = _last_line(done.stderr)
            if last.startswith("ModuleNotFoundError"):
                # Not the submission's fault: the evaluator cannot run on this machine.
                raise TaskDirError(
                    f"SIA task dir {task.root}: evaluate.py cannot run here: {last} "
                    "(pip install 'sia[sia-tasks]' brings pandas and numpy)"
                )
            return Evaluation(None, f"evaluator: exited {done.returncode}: {last}")
        return _read_results(task, gen / "results.json")


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
    where = f"SIA task dir {task.root}"
    if not path.is_file():
        raise TaskDirError(f"{where}: evaluate.py exited 0 but wrote no results.json")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TaskDirError(f"{where}: results.json is not JSON ({error})") from None
    if not isinstance(results, dict):
        raise TaskDirError(f"{where}: results.json is not a JSON object")
    key, value = _metric(results, task.metric)
    if key is None:
        wanted = task.metric or " / ".join(METRIC_KEYS)
        raise TaskDirError(
            f"{where}: results.json has no metric {wanted!r}; "
            'name its key in sia-task.json: {"metric": "KEY"}'
        )
    scaled = value * task.metric_scale if isinstance(value, int | float) else None
    if scaled is None or not 0.0 <= scaled <= 1.0:
        raise TaskDirError(
            f"{where}: results.json metric {key}={value!r} (scale {task.metric_scale:g}) is "
            'not in [0, 1]; set its scale in sia-task.json: {"metric_scale": 0.01}'
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
