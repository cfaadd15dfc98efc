"""Run or resume a scripted run in this process: ``python -m tests.support.run_scripted``.

Used by tests that must kill a real process (``SIA_CRASH_AT``) and resume in another.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sia.config import RunConfig
from sia.orchestrator import Orchestrator
from sia.ports import Components
from sia.workspace import Workspace
from statemachine.planner import Budget
from tests.support.scripted import (
    ScriptedFeedback,
    ScriptedMeta,
    ScriptedRunner,
    ScriptedTask,
    ScriptedTrainer,
)


class StepClock:
    """A clock that advances one second per reading, so histories are reproducible."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def orchestrator(ws: Workspace, recorder, mode: str, clock=None) -> Orchestrator:
    components = Components(
        task=ScriptedTask(),
        meta=ScriptedMeta(),
        feedback=ScriptedFeedback(mode),
        runner=ScriptedRunner(),
        trainer=ScriptedTrainer(ws.root / "scratch"),
    )
    return Orchestrator(
        recorder=recorder,
        repo=ws.repo(),
        artifacts=ws.artifacts(),
        components=components,
        clock=clock or StepClock(),
    )


def config(mode: str, iterations: int) -> RunConfig:
    return RunConfig(task="arith-v1", mode=mode, batch_size=4, budget=Budget(iterations=iterations))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workspace", type=Path)
    parser.add_argument("run_id")
    parser.add_argument("--mode", default="w+h")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    ws = Workspace.create(args.workspace)
    with ws.writer() as recorder:
        orch = orchestrator(ws, recorder, args.mode)
        if args.resume:
            orch.resume(args.run_id)
        else:
            orch.start(args.run_id, config(args.mode, args.iterations))


if __name__ == "__main__":
    main()
