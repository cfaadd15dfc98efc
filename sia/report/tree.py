"""The workspace's runs as a tree: each branch under the run and iteration it started from."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger import LedgerBusy, Recorder
from sia.history import run_state
from statemachine.errors import SiaError
from statemachine.state import RunState

__all__ = ["RunNode", "run_tree"]


@dataclass
class RunNode:
    run_id: str
    parent: str | None
    parent_seq: int | None
    at_iteration: int | None  # the parent's iteration the branch starts after
    mode: str | None
    status: str
    iteration: int
    best_val: float | None
    branches: list[RunNode] = field(default_factory=list)


def run_tree(recorder: Recorder) -> list[RunNode]:
    """Every run of the ledger, roots in run-id order, branches nested under their parent.

    A branch whose parent is not in this ledger is shown as a root, not dropped.
    """
    nodes: dict[str, RunNode] = {}
    for head in recorder.heads():
        try:
            s = run_state(recorder, head.run_id)
        except LedgerBusy:
            raise
        except SiaError:
            # verify re-reads the rows and raises if the file cannot give them; if it can,
            # the record itself no longer folds (edited by hand): the run is still listed,
            # as a root, so that it hides neither itself nor the others.
            recorder.verify(head.run_id)
            s = RunState(head.run_id, last_seq=head.seq, status="unreadable")
        nodes[s.run_id] = RunNode(
            run_id=s.run_id,
            parent=s.parent[0] if s.parent else None,
            parent_seq=s.parent[1] if s.parent else None,
            at_iteration=s.branched_at,
            mode=s.mode,
            status=s.status,
            iteration=s.iteration,
            best_val=s.best.score if s.best else None,
        )
    roots = []
    for node in nodes.values():
        parent = nodes.get(node.parent) if node.parent else None
        (parent.branches if parent else roots).append(node)
    return roots
