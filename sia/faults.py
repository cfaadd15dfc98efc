"""Named crash points for fault-injection tests.

``SIA_CRASH_AT=<point>`` makes the process SIGKILL itself when it reaches that point, which
is the only deterministic way to test the gap between a side effect and its event.
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
    }
)


def crash_point(name: str) -> None:
    if os.environ.get("SIA_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
