"""The tasks bundled with the reference implementation's PyPI package, ``sia-agent``.

Installing ``sia-agent`` is not an option: its wheel's top-level package is also named
``sia`` and would shadow this project's. So its wheel is fetched with ``pip download``,
checked against a pinned sha256, and only the task directories are unpacked into the cache
(``$SIA_CACHE/tasks/sia-agent-<version>/<name>``), where they are read as SIA-format task
directories (``sia:gpqa``, ``sia:lawbench``, ``sia:longcot-chess``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from tasks.siadir.layout import TaskDirError

__all__ = [
    "PACKAGE_TASKS",
    "fetch_package_tasks",
    "package_task_dir",
    "package_tasks_cached",
]

PACKAGE, VERSION = "sia-agent", "0.6.0"
WHEEL_NAME = "sia_agent-0.6.0-py3-none-any.whl"
WHEEL_SHA256 = "10a186ea66d83a7278d911e913fb6a964cb48a8795625814b736e220a4b56961"
#: The package's tasks that fit this project's loop (text in, scored answer out).
PACKAGE_TASKS: tuple[str, ...] = ("gpqa", "lawbench", "longcot-chess")
_PREFIX = "sia/tasks/"
_MANIFEST = "sia-manifest.json"
_PIP_TIMEOUT_S = 300
#: Bumped whenever unpacking changes, so an older cache entry is unpacked again.
_LAYOUT = 2
#: sia-task.json written beside a task, where its evaluator needs telling.
_OVERRIDES: dict[str, dict[str, object]] = {
    "longcot-chess": {"metric": "accuracy", "metric_scale": 0.01},  # a percentage
}


def _cache_dir() -> Path:
    override = os.environ.get("SIA_CACHE")
    if override:
        root = Path(override).expanduser()
    else:
        from platformdirs import user_cache_dir

        root = Path(user_cache_dir("sia"))
    return root / "tasks" / f"{PACKAGE}-{VERSION}"


def package_tasks_cached() -> bool:
    """Whether the package's tasks are unpacked in the cache, by this version of SIA."""
    try:
        manifest = json.loads((_cache_dir() / _MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("layout") == _LAYOUT


def package_task_dir(name: str, *, fetch: bool = True) -> Path:
    """The directory of package task ``name``, fetching the package first if ``fetch``."""
    if name not in PACKAGE_TASKS:
        raise TaskDirError(f"unknown task sia:{name}; {PACKAGE} tasks: {', '.join(PACKAGE_TASKS)}")
    if not package_tasks_cached():
        if not fetch:
            raise TaskDirError(f"sia:{name} is not fetched yet; run `sia tasks fetch`")
        fetch_package_tasks()
    return _cache_dir() / name


def fetch_package_tasks() -> Path:
    """Download, verify and unpack the package's tasks (once); their parent directory."""
    dest = _cache_dir()
    if package_tasks_cached():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".staging-") as scratch:
        wheel = _download(Path(scratch))
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise TaskDirError(
                f"{WHEEL_NAME} has sha256 {digest}, expected {WHEEL_SHA256}; not unpacked"
            )
        staging = Path(scratch) / "tasks"
        _unpack(wheel, staging)
        for name, overrides in _OVERRIDES.items():
            (staging / name / "sia-task.json").write_text(json.dumps(overrides, indent=2) + "\n")
        manifest = {"package": PACKAGE, "version": VERSION, "sha256": digest, "layout": _LAYOUT}
        (staging / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)  # a manifest-less leftover is never trusted
        staging.rename(dest)
    return dest


def _download(scratch: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(scratch / "download"),
        f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TaskDirError(f"pip download of {PACKAGE}=={VERSION} timed out") from None
    wheel = scratch / "download" / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise TaskDirError(f"pip download of {PACKAGE}=={VERSION} failed: {last}")
    return wheel


def _unpack(wheel: Path, staging: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            path = PurePosixPath(info.filename)
            if info.is_dir() or not info.filename.startswith(_PREFIX) or ".." in path.parts:
                continue
            relative = PurePosixPath(*path.parts[2:])
            if relative.parts[0] not in PACKAGE_TASKS or "__pycache__" in relative.parts:
                continue
            target = staging.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
