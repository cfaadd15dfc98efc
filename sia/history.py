"""Questions about a recorded run that several commands ask."""

from __future__ import annotations

from ledger import Recorder, RunNotFound
from statemachine.replay import replay
from statemachine.state import IterationRecord, RunState

__all__ = ["harness_at", "iteration_records", "run_state"]


def run_state(recorder: Recorder, run_id: str) -> RunState:
    """The folded state of a stored run; :class:`RunNotFound` if it has no events."""
    if recorder.head(run_id) is None:
        raise RunNotFound(f"no run named {run_id} in this workspace")
    return replay(run_id, recorder.read(run_id))


def iteration_records(state: RunState) -> dict[int, IterationRecord]:
    """Every iteration of ``state`` by number, the one still running included."""
    records = {rec.iteration: rec for rec in state.iterations}
    if state.current is not None:
        records[state.current.iteration] = state.current
    return records


def harness_at(state: RunState, iteration: int) -> str:
    """The harness commit that iteration ``iteration`` evaluated (its candidate's commit)."""
    best = state.origin.harness_commit if state.origin else None
    for rec in state.iterations:
        if rec.iteration == iteration:
            commit = rec.harness_commit or best
            if commit is None:
                raise RunNotFound(f"run {state.run_id} has no harness yet at iteration {iteration}")
            return commit
        if rec.accepted and rec.harness_commit:
            best = rec.harness_commit
    raise RunNotFound(f"run {state.run_id} has no iteration {iteration}")
