"""Scripted components behind the real CLI: ``open_components`` patched to hand out the
scripted agents, runner and trainer, with hooks to stop a run or fail its training.

It counts its openings, so "refused before a model loads" is checked, not assumed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from ledger import Recorder
from sia.config import RunConfig
from sia.ports import Components, RolloutRequest, TrainedAdapter, TrainRequest
from tests.support.scripted import (
    ScriptedFeedback,
    ScriptedMeta,
    ScriptedRunner,
    ScriptedTask,
    ScriptedTrainer,
)

__all__ = ["Scripted", "one_line", "patch_components"]


@dataclass
class Scripted:
    """Stands in for ``open_components``; ``opened`` counts how often it was asked."""

    interrupt_rollout: int | None = None  # Ctrl-C once, at this iteration's rollout
    block_rollout: Callable[[int], None] | None = None  # called before every rollout
    train_fault: Callable[[TrainRequest, Path], None] | None = None  # after training
    opened: int = 0

    @contextlib.contextmanager
    def open(
        self, config: RunConfig, recorder: Recorder, *, progress: Any = None
    ) -> Iterator[Components]:
        self.opened += 1
        scratch = Path(recorder.path).parent / "scratch"  # type: ignore[attr-defined]
        yield Components(
            task=ScriptedTask(),
            meta=ScriptedMeta(),
            feedback=ScriptedFeedback(config.mode),
            runner=_Runner(self),
            trainer=_Trainer(scratch, self),
        )


class _Runner(ScriptedRunner):
    def __init__(self, script: Scripted) -> None:
        super().__init__()
        self.script = script

    def rollout(self, request: RolloutRequest):
        if self.script.block_rollout is not None:
            self.script.block_rollout(request.iteration)
        if request.iteration == self.script.interrupt_rollout:
            self.script.interrupt_rollout = None
            raise KeyboardInterrupt("SIGINT")
        return super().rollout(request)


class _Trainer(ScriptedTrainer):
    def __init__(self, workdir: Path, script: Scripted) -> None:
        super().__init__(workdir)
        self.script = script

    def train(self, request: TrainRequest) -> TrainedAdapter:
        trained = super().train(request)
        if self.script.train_fault is not None:
            self.script.train_fault(request, trained.path)
        return trained


def patch_components(monkeypatch: pytest.MonkeyPatch, script: Scripted) -> None:
    # `sia run`/`resume` import it into their module, `sia experiment` from sia.wiring.
    monkeypatch.setattr("sia.cli.write.open_components", script.open)
    monkeypatch.setattr("sia.wiring.open_components", script.open)


def one_line(result: Result) -> str:
    """The single line a refused command prints, after checking it is one and no crash."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]
