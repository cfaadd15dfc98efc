"""SIA-format task directories (``--task-dir``) and the ``sia-agent`` package's tasks."""

from tasks.siadir.layout import TaskDir, TaskDirError, read_task_dir
from tasks.siadir.package import PACKAGE_TASKS, fetch_package_tasks, package_task_dir
from tasks.siadir.scoring import Evaluation, evaluate_submission
from tasks.siadir.task import DirTask

__all__ = [
    "PACKAGE_TASKS",
    "DirTask",
    "Evaluation",
    "TaskDir",
    "TaskDirError",
    "evaluate_submission",
    "fetch_package_tasks",
    "package_task_dir",
    "read_task_dir",
]
