"""Re-evaluate the candidates a stored run evaluated, on any split, without touching the run.

A run scores each iteration's candidate on val and only the best on test; to see test per
iteration (or val again, to check a recorded score), this module takes every recorded
``Evaluated(split="val")`` candidate (harness commit + adapter tag), loads that harness from
the harness repo and that adapter from the artifact store (sha256 verified), and evaluates it
through a fresh gateway and runner built from the run's own stored config. The calls go to a
throw-away in-memory recorder: the run's ledger is only read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness_repo import tagged_adapter
from ledger import InMemoryRecorder, Recorder
from sia.config import RunConfig
from sia.errors import SiaError
from sia.history import iteration_records, run_state
from sia.ports import EvalRequest
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.replay import envelopes

__all__ = [
    "CandidateScore",
    "RecordedCandidate",
    "candidate_evaluator",
    "evaluate_candidates",
    "recorded_candidates",
]


@dataclass(frozen=True)
class RecordedCandidate:
    """One iteration's validation candidate, as the ledger recorded it."""

    iteration: int
    harness_commit: str
    adapter_tag: str | None
    val: float
    lever: str | None
    accepted: bool | None


@dataclass(frozen=True)
class CandidateScore:
    candidate: RecordedCandidate
    split: str
    score: float
    failures: int
    metrics: dict[str, Any] = field(default_factory=dict)


def recorded_candidates(recorder: Recorder, run_id: str) -> list[RecordedCandidate]:
    """Every candidate the run evaluated on val, in iteration order."""
    state = run_state(recorder, run_id)
    records = iteration_records(state)
    found = []
    for envelope in envelopes(recorder.read(run_id)):
        event = envelope.event
        if isinstance(event, ev.Evaluated) and event.split == "val":
            rec = records.get(event.iteration)
            decision = rec.decision if rec is not None else None
            found.append(
                RecordedCandidate(
                    iteration=event.iteration,
                    harness_commit=event.harness_commit,
                    adapter_tag=event.adapter_tag,
                    val=event.score,
                    lever=decision.lever if decision is not None else None,
                    accepted=rec.accepted if rec is not None else None,
                )
            )
    return found


def evaluate_candidates(
    workspace: Workspace,
    run_id: str,
    *,
    split: str = "test",
    iterations: Iterable[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[CandidateScore]:
    """Score the run's recorded candidates (those of ``iterations``, or all) on ``split``.

    Raises :class:`SiaError` for an unknown run or iteration, or a missing or corrupt
    harness commit or adapter artifact, before any model is loaded.
    """
    with workspace.reader() as recorder:
        candidates = recorded_candidates(recorder, run_id)
    chosen = _select(candidates, iterations, run_id)
    repo, artifacts = workspace.repo(), workspace.artifacts()
    # Everything is read (and every artifact verified) up front: a bad one fails fast.
    for candidate in chosen:
        repo.files_at(candidate.harness_commit)
        if candidate.adapter_tag is not None:
            tagged_adapter(repo, artifacts, candidate.adapter_tag)
    with candidate_evaluator(workspace, run_id, progress=progress) as evaluate:
        return [evaluate(candidate, split) for candidate in chosen]


@contextmanager
def candidate_evaluator(
    workspace: Workspace,
    run_id: str,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Callable[[RecordedCandidate, str], CandidateScore]]:
    """``evaluate(candidate, split)`` for candidates of ``run_id``, one model load for all.

    Each call loads the candidate's harness from the repo and its adapter from the artifact
    store (sha256 verified) and evaluates it with the run's stored config.
    """
    from sia.wiring import open_serving

    with workspace.reader() as recorder:
        config = RunConfig.from_dict(run_state(recorder, run_id).config)
    repo, artifacts = workspace.repo(), workspace.artifacts()
    with InMemoryRecorder() as scratch, open_serving(config, scratch, progress=progress) as served:

        def evaluate(candidate: RecordedCandidate, split: str) -> CandidateScore:
            tag = candidate.adapter_tag
            adapter = tagged_adapter(repo, artifacts, tag) if tag else None
            result = served.runner.evaluate(
                EvalRequest(
                    run_id=f"{run_id}-reeval",
                    iteration=candidate.iteration,
                    split=split,
                    harness_commit=candidate.harness_commit,
                    harness=repo.files_at(candidate.harness_commit),
                    adapter_tag=tag,
                    adapter_path=adapter,
                )
            )
            failures = int(result.metrics.get("failures", 0))
            return CandidateScore(candidate, split, result.score, failures, result.metrics)

        yield evaluate


def _select(
    candidates: Sequence[RecordedCandidate], iterations: Iterable[int] | None, run_id: str
) -> list[RecordedCandidate]:
    if iterations is None:
        return list(candidates)
    wanted = sorted(set(iterations))
    by_iteration = {c.iteration: c for c in candidates}
    missing = [i for i in wanted if i not in by_iteration]
    if missing:
        known = ", ".join(str(i) for i in sorted(by_iteration)) or "none"
        raise SiaError(
            f"run {run_id} evaluated no candidate at iteration(s) "
            f"{', '.join(map(str, missing))} (evaluated: {known})"
        )
    return [by_iteration[i] for i in wanted]
