"""Named crash points for fault-injection tests.

``SIA_CRASH_AT=<point>[:<n>]`` makes the process SIGKILL itself the ``n``-th time (default
the first) it reaches that point: the only deterministic way to test the gap between a
side effect and the event that records it.
"""

from __future__ import annotations

import os
import signal

__all__ = ["POINTS", "crash_point"]

POINTS = frozenset(
    {
        "after-commit",  # harness commit written, HarnessCommitted not yet appended
        "after-artifact",  # adapter stored, tag not yet created
        "after-tag",  # adapter tag created, AdapterTagged not yet appended
        "after-effect",  # any effect finished, its events not yet appended
        "after-append",  # events appended, nothing else done
        "after-episode",  # one episode of a rollout or evaluation finished, others running
        "after-train-step",  # one optimiser step done, training not finished
    }
)


_reached: dict[str, int] = {}


def crash_point(name: str) -> None:
    target = os.environ.get("SIA_CRASH_AT")
    if not target:
        return
    point, _, nth = target.partition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
