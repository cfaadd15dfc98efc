"""Tasks: the contract (``Task``, ``Item``), the registry, the contract checker, bundled tasks.

This package imports only the standard library, so a task can be loaded anywhere.
"""

from tasks.base import SPLITS, Item, Splits, Task
from tasks.check import check_task
from tasks.errors import TaskCheckFailed, TaskError
from tasks.registry import get_task, list_tasks, register_task

__all__ = [
    "SPLITS",
    "Item",
    "Splits",
    "Task",
    "TaskCheckFailed",
    "TaskError",
    "check_task",
    "get_task",
    "list_tasks",
    "register_task",
]
