"""Progress reports from long model operations, so a CLI can draw a bar without us printing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressCallback", "ProgressEvent", "report"]


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long operation.

    ``stage`` names the phase (``download``, ``verify``, ``extract``, ``convert``, ``save``,
    ``hash``, ``load``); ``done`` counts ``unit`` (bytes, tensors or steps) so far and
    ``total`` is ``None`` while unknown. Every stage reports ``done == 0`` when it starts
    and ``done == total`` when it ends.
    """

    stage: str
    done: int
    total: int | None
    unit: str = "B"


ProgressCallback = Callable[[ProgressEvent], None]


def report(
    callback: ProgressCallback | None, stage: str, done: int, total: int | None, unit: str = "B"
) -> None:
    """Send one event to ``callback`` if there is one."""
    if callback is not None:
        callback(ProgressEvent(stage=stage, done=done, total=total, unit=unit))
