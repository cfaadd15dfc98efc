"""Errors raised by tasks: unknown names, bad task configuration, failed task checks."""

from statemachine.errors import SiaError

__all__ = ["TaskCheckFailed", "TaskDirError", "TaskError"]


class TaskError(SiaError):
    """A task that cannot be found, configured or read as asked."""


class TaskCheckFailed(TaskError):
    """A task that breaks the task contract (see :func:`tasks.check.check_task`)."""


class TaskDirError(TaskError):
    """A SIA-format task directory that cannot be used as it is."""
