"""Task lookup by id (``arith-v1``), by unversioned name (``arith`` → its latest version),
by SIA-format directory (``dir:/path/to/task``) or by ``sia-agent`` package task (``sia:gpqa``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tasks.arith import ArithTask
from tasks.base import Task
from tasks.charges import ChargesTask
from tasks.errors import TaskError

__all__ = ["DIR_PREFIX", "PACKAGE_PREFIX", "get_task", "list_tasks", "register_task"]

#: ``dir:PATH`` names a SIA-format task directory, ``sia:NAME`` a task of ``sia-agent``.
DIR_PREFIX, PACKAGE_PREFIX = "dir:", "sia:"

TaskFactory = Callable[[int], Task]

_VERSIONED = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_.-]*)-v(?P<version>[0-9]+)$")
_FACTORIES: dict[str, TaskFactory] = {}


def register_task(task_id: str, factory: TaskFactory) -> None:
    """Make ``factory(seed)`` available as ``task_id`` (which must be ``<name>-v<N>``)."""
    if not _VERSIONED.match(task_id):
        raise TaskError(f"task id {task_id!r} must look like <name>-v<N>, e.g. arith-v1")
    if task_id in _FACTORIES:
        raise TaskError(f"task {task_id} is already registered")
    _FACTORIES[task_id] = factory


def list_tasks() -> list[str]:
    """Every registered task id, sorted."""
    return sorted(_FACTORIES)


def get_task(name: str, seed: int = 0) -> Task:
    """The task ``name`` bound to ``seed``; a bare name resolves to its highest version."""
    if name.startswith((DIR_PREFIX, PACKAGE_PREFIX)):
        from tasks.siadir import DirTask, package_task_dir

        if name.startswith(DIR_PREFIX):
            return DirTask(name.removeprefix(DIR_PREFIX), seed)
        return DirTask(package_task_dir(name.removeprefix(PACKAGE_PREFIX)), seed)
    task_id = name if name in _FACTORIES else _latest(name)
    if task_id is None:
        raise TaskError(
            f"unknown task {name!r}; known tasks: {', '.join(list_tasks())}, "
            f"{PACKAGE_PREFIX}NAME, {DIR_PREFIX}PATH"
        )
    return _FACTORIES[task_id](seed)


def _latest(name: str) -> str | None:
    versions = [
        (int(m["version"]), task_id)
        for task_id in _FACTORIES
        if (m := _VERSIONED.match(task_id)) and m["name"] == name
    ]
    return max(versions)[1] if versions else None


register_task(ArithTask.id, lambda seed: ArithTask(seed=seed))
register_task(ChargesTask.id, lambda seed: ChargesTask(seed=seed))


def _denoise(seed: int) -> Task:
    # Imported on first use: the task needs numpy, and `import tasks` stays stdlib-only.
    from tasks.denoise import DenoiseTask

    return DenoiseTask(seed=seed)


def _chess(seed: int) -> Task:
    from tasks.chess import ChessTask  # python-chess loads only when the task is used

    return ChessTask(seed=seed)


def _trimul(seed: int) -> Task:
    from tasks.trimul import TrimulTask  # torch loads only when the task is used

    return TrimulTask(seed=seed)


register_task("denoise-v1", _denoise)
register_task("chess-v1", _chess)
register_task("trimul-v1", _trimul)
