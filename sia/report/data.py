"""Everything a run report shows, read back from the ledger and the harness repo.

:func:`gather` folds the run's events once and reads its episodes, model calls, adapter
manifests and harness diffs; the result is a tree of plain dataclasses that the HTML
renderer draws and that is embedded, as JSON, in the page itself, so every number on the
page can be checked against the ledger. Nothing is computed here that the ledger does not
hold, except sums, counts and means of recorded values.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

from harness_repo import HarnessRepo, HarnessRepoError
from ledger import Recorder, RunNotFound
from ledger.records import EpisodeRow
from sia.report.tree import RunNode, run_tree
from sia.report.usage import PhaseUsage, phase_usage
from statemachine import events as ev
from statemachine.replay import envelopes
from statemachine.state import Envelope, IterationRecord, RunState, fold

__all__ = [
    "SCHEMA",
    "DecisionRow",
    "HarnessEdit",
    "IterationRow",
    "ReportData",
    "RewardSample",
    "RunSummary",
    "TestScore",
    "TrainingCurve",
    "gather",
    "verdict_of",
]

#: Version of the embedded JSON's shape; bumped when a field changes meaning.
SCHEMA = 1


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    task: str | None
    mode: str | None
    seed: int
    status: str
    phase: str | None
    events: int
    started_ts: float | None
    last_ts: float | None
    parent_run: str | None
    parent_seq: int | None
    branched_at: int | None
    origin_val: float | None  # the parent's best val score a branch starts from
    best_iteration: int | None
    best_val: float | None
    best_harness_commit: str | None
    best_adapter_tag: str | None
    test_score: float | None
    finish_reason: str | None
    error: str | None


@dataclass(frozen=True)
class IterationRow:
    """One iteration's candidate: what it changed, its val score and the verdict."""

    iteration: int
    phases: list[str]
    lever: str | None
    algorithm: str | None
    harness_commit: str | None  # the commit this iteration made, if it edited
    adapter_tag: str | None  # the adapter this iteration trained, if it trained
    rollout_mean_reward: float | None
    val_score: float | None
    verdict: str  # accepted | rejected | abandoned | pending
    delta: float | None


@dataclass(frozen=True)
class TestScore:
    iteration: int
    seq: int
    score: float
    harness_commit: str
    adapter_tag: str | None


@dataclass(frozen=True)
class DecisionRow:
    """A Feedback Agent decision and what became of it."""

    iteration: int
    seq: int
    ts: float
    lever: str
    agent: str
    algorithm: str | None
    algorithm_reason: str
    rationale: str
    expected_effect: str
    rules: list[str]
    produced: str | None  # the commit or adapter tag made from the decision
    val_score: float | None
    verdict: str
    delta: float | None
    paid_off: bool | None
    abandoned: str | None
    rejected_patches: int


@dataclass(frozen=True)
class RewardSample:
    """The rewards of one rollout's episodes (the train-split batch of an iteration)."""

    iteration: int
    episodes: int
    rewards: list[float]  # episodes without a reward are counted in ``unscored`` only
    unscored: int
    mean: float | None
    statuses: dict[str, int]


@dataclass(frozen=True)
class TrainingCurve:
    """One adapter's training metrics as its manifest recorded them.

    List-valued metrics are per step (``loss``, ``grad_norm``, each of ``stats``); every
    other number of the manifest's metrics goes to ``summary``.
    """

    iteration: int
    seq: int
    tag: str
    algorithm: str
    sha256: str
    loss: list[float | None]
    grad_norm: list[float | None]
    stats: dict[str, list[float | None]]
    summary: dict[str, float | int | bool | str]


@dataclass(frozen=True)
class HarnessEdit:
    """One harness commit made by an EDIT and the patch it applied to its parent."""

    iteration: int
    seq: int
    commit: str
    parent: str
    summary: str
    adopted: bool
    files: list[str]
    patch: str
    verdict: str
    error: str | None = None  # why the patch could not be read from the repo


@dataclass(frozen=True)
class ReportData:
    run: RunSummary
    iterations: list[IterationRow]
    tests: list[TestScore]
    decisions: list[DecisionRow]
    rewards: list[RewardSample]
    training: list[TrainingCurve]
    edits: list[HarnessEdit]
    tree: list[RunNode]
    usage: list[PhaseUsage]
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; non-finite floats become ``None`` since JSON has no NaN."""
        return _finite(asdict(self))


def gather(recorder: Recorder, repo: HarnessRepo, run_id: str) -> ReportData:
    """Read everything the report of ``run_id`` shows; :class:`RunNotFound` if unknown.

    The events are read once and both folded and walked, so the state and the event
    details agree even while the run is live and appending.
    """
    if recorder.head(run_id) is None:
        raise RunNotFound(f"no run named {run_id} in this workspace")
    envs = envelopes(recorder.read(run_id))
    state = fold(run_id, envs)
    records = _records(state)
    verdicts = {it: verdict_of(rec) for it, rec in records.items()}
    # Bulk rows can run ahead of the events of a live run: keep what the events cover.
    known = set(records)
    episodes = [ep for ep in recorder.read_episodes(run_id) if ep.iteration in known]
    return ReportData(
        run=_summary(state),
        iterations=[_iteration_row(rec, verdicts[rec.iteration]) for rec in state.iterations],
        tests=_tests(envs),
        decisions=_decisions(envs, records, verdicts),
        rewards=_rewards(episodes),
        training=_training(envs),
        edits=_edits(envs, repo, verdicts),
        tree=run_tree(recorder),
        usage=phase_usage(recorder, run_id, envs, episodes, sorted(known), state.branched_at),
    )


def verdict_of(rec: IterationRecord) -> str:
    if rec.abandoned is not None:
        return "abandoned"
    return {True: "accepted", False: "rejected", None: "pending"}[rec.accepted]


def _records(state: RunState) -> dict[int, IterationRecord]:
    return {rec.iteration: rec for rec in state.iterations}


def _summary(state: RunState) -> RunSummary:
    best = state.best
    return RunSummary(
        run_id=state.run_id,
        task=state.task,
        mode=state.mode,
        seed=state.seed,
        status=state.status,
        phase=state.phase.value if state.phase else None,
        events=state.last_seq,
        started_ts=state.started_ts,
        last_ts=state.last_ts,
        parent_run=state.parent[0] if state.parent else None,
        parent_seq=state.parent[1] if state.parent else None,
        branched_at=state.branched_at,
        origin_val=state.origin.score if state.origin else None,
        best_iteration=best.iteration if best else None,
        best_val=best.score if best else None,
        best_harness_commit=best.harness_commit if best else None,
        best_adapter_tag=best.adapter_tag if best else None,
        test_score=state.test_score,
        finish_reason=state.finish_reason,
        error=state.error,
    )


def _iteration_row(rec: IterationRecord, verdict: str) -> IterationRow:
    d = rec.decision
    return IterationRow(
        iteration=rec.iteration,
        phases=list(rec.phases),
        lever=d.lever if d else None,
        algorithm=d.algorithm if d else None,
        harness_commit=rec.harness_commit,
        adapter_tag=rec.adapter_tag,
        rollout_mean_reward=rec.rollout.mean_reward if rec.rollout else None,
        val_score=rec.score,
        verdict=verdict,
        delta=rec.outcome.delta if rec.outcome else None,
    )


def _tests(envs: list[Envelope]) -> list[TestScore]:
    return [
        TestScore(
            e.event.iteration, e.seq, e.event.score, e.event.harness_commit, e.event.adapter_tag
        )
        for e in envs
        if isinstance(e.event, ev.Evaluated) and e.event.split == "test"
    ]


def _decisions(
    envs: list[Envelope], records: dict[int, IterationRecord], verdicts: dict[int, str]
) -> list[DecisionRow]:
    rows = []
    for e in envs:
        d = e.event
        if not isinstance(d, ev.DecisionMade):
            continue
        rec = records[d.iteration]
        outcome = rec.outcome
        rows.append(
            DecisionRow(
                iteration=d.iteration,
                seq=e.seq,
                ts=e.ts,
                lever=d.lever,
                agent=d.agent,
                algorithm=d.algorithm,
                algorithm_reason=d.algorithm_reason,
                rationale=d.rationale,
                expected_effect=d.expected_effect,
                rules=list(d.rules),
                produced=rec.harness_commit or rec.adapter_tag,
                val_score=rec.score,
                verdict=verdicts[d.iteration],
                delta=outcome.delta if outcome else None,
                paid_off=outcome.paid_off if outcome else None,
                abandoned=rec.abandoned,
                rejected_patches=len(rec.rejected_patches),
            )
        )
    return rows


def _rewards(episodes: list[EpisodeRow]) -> list[RewardSample]:
    by_iteration: dict[int, list[EpisodeRow]] = defaultdict(list)
    for ep in episodes:
        if ep.purpose == "rollout":
            by_iteration[ep.iteration].append(ep)
    samples = []
    for iteration in sorted(by_iteration):
        eps = by_iteration[iteration]
        rewards = [float(ep.reward) for ep in eps if ep.reward is not None]
        samples.append(
            RewardSample(
                iteration=iteration,
                episodes=len(eps),
                rewards=rewards,
                unscored=len(eps) - len(rewards),
                mean=sum(rewards) / len(rewards) if rewards else None,
                statuses=dict(sorted(Counter(ep.status for ep in eps).items())),
            )
        )
    return samples


def _training(envs: list[Envelope]) -> list[TrainingCurve]:
    curves = []
    for e in envs:
        tagged = e.event
        if not isinstance(tagged, ev.AdapterTagged):
            continue
        metrics = tagged.manifest.get("metrics") or {}
        stats = metrics.get("stats") if isinstance(metrics.get("stats"), dict) else {}
        curves.append(
            TrainingCurve(
                iteration=tagged.iteration,
                seq=e.seq,
                tag=tagged.tag,
                algorithm=tagged.algorithm,
                sha256=tagged.sha256,
                loss=_series(metrics.get("loss")),
                grad_norm=_series(metrics.get("grad_norm")),
                stats={name: _series(v) for name, v in sorted(stats.items()) if _series(v)},
                summary={
                    name: value
                    for name, value in sorted(metrics.items())
                    if isinstance(value, int | float | bool | str)
                },
            )
        )
    return curves


def _series(value: Any) -> list[float | None]:
    """A per-step metric; a scalar (one number for the whole training) is no curve."""
    if not isinstance(value, list):
        return []
    return [float(v) if isinstance(v, int | float) else None for v in value]


def _edits(envs: list[Envelope], repo: HarnessRepo, verdicts: dict[int, str]) -> list[HarnessEdit]:
    edits = []
    for e in envs:
        c = e.event
        # The initial harness (no parent) is no edit: it is the baseline everything diffs to.
        if not isinstance(c, ev.HarnessCommitted) or c.parent is None:
            continue
        patch, files, error = "", [], None
        try:
            patch = repo.diff(c.parent, c.commit)
            files = repo.changed_files(c.parent, c.commit)
        except HarnessRepoError as exc:
            error = str(exc)
        edits.append(
            HarnessEdit(
                iteration=c.iteration,
                seq=e.seq,
                commit=c.commit,
                parent=c.parent,
                summary=c.summary,
                adopted=c.adopted,
                files=files,
                patch=patch,
                verdict=verdicts.get(c.iteration, "pending"),
                error=error,
            )
        )
    return edits


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
