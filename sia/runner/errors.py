"""Errors raised by the harness runner."""

from statemachine.errors import SiaError

__all__ = ["RunnerError"]


class RunnerError(SiaError):
    """A rollout or evaluation that cannot run at all (bad harness files, no items)."""
