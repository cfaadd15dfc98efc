"""A task where an untrained tiny model earns some reward, so training has signal.

``python -m tests.support.any_number ARGS`` runs the ``sia`` command with the task
registered as ``any-number``, for tests that need the CLI in a process of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tasks import registry
from tasks.arith import ArithConfig, ArithTask


class AnyNumberTask(ArithTask):
    """arith's items and harness, but any integer in the reply scores: an untrained tiny
    model emits a digit byte now and then, so rewards within a group differ."""

    id = "any-number-v1"

    def reward(self, item, answer_text):
        return 1.0 if answer_text.strip() else 0.0


def factory(seed: int) -> AnyNumberTask:
    return AnyNumberTask(seed, ArithConfig(train=20, val=6, test=6))


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """``any-number-v1`` in the task registry while the block runs."""
    saved = registry._FACTORIES
    registry._FACTORIES = {**saved, "any-number-v1": factory}
    try:
        yield
    finally:
        registry._FACTORIES = saved


if __name__ == "__main__":
    from sia.cli import main

    with registered():
        main()
