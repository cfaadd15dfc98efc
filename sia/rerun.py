"""Re-execute recorded iterations and compare them, episode by episode, with the ledger.

For each chosen iteration the rollout is run again with what was recorded for it (harness
commit, adapter tag, item ids, seed, forced temperature) and so is the val evaluation of
its candidate, through a fresh gateway and runner built from the run's stored config. Each
re-run episode is compared with its recorded twin, call by call and token by token; the
first difference of each episode is reported, the way a workflow replayer reports
nondeterminism. The calls go to a throw-away in-memory recorder: the run's ledger is only
read. Greedy decoding on the ``hf`` backend reproduces exactly on the same machine; sampled
rollouts reproduce from their per-episode seeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness_repo import tagged_adapter
from ledger import InMemoryRecorder, Recorder
from sia.config import RunConfig
from sia.errors import SiaError
from sia.evaluation import recorded_candidates
from sia.history import iteration_records, run_state
from sia.ports import EvalRequest, RolloutRequest
from sia.trajectories import Trajectory, read_trajectories
from sia.workspace import Workspace
from statemachine.planner import iteration_seed

__all__ = ["Divergence", "RerunReport", "rerun_iterations"]


@dataclass(frozen=True)
class Divergence:
    """Where a re-run episode first differs from the recorded one.

    ``what`` is ``calls`` (a different number of model calls), ``prompt`` (the harness sent
    different tokens), ``tokens`` (the model answered differently, from ``token``), or
    ``outcome`` (same calls, different status or reward).
    """

    iteration: int
    purpose: str
    episode_id: str
    item_id: str
    what: str
    call: int | None = None
    token: int | None = None
    recorded: Any = None
    rerun: Any = None


@dataclass(frozen=True)
class RerunReport:
    iteration: int
    purpose: str
    episodes: int
    calls: int
    divergences: tuple[Divergence, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "divergences": [asdict(d) for d in self.divergences]}


def rerun_iterations(
    workspace: Workspace,
    run_id: str,
    *,
    iterations: Iterable[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[RerunReport]:
    """Re-run the rollout and val evaluation of ``iterations`` (default: all) of ``run_id``.

    Raises :class:`SiaError` for an unknown iteration, a missing harness commit, or a
    missing or corrupt adapter (sha256), before any model is loaded.
    """
    from sia.wiring import open_serving

    with workspace.reader() as recorder:
        state = run_state(recorder, run_id)
        config = RunConfig.from_dict(state.config)
        records = iteration_records(state)
        chosen = _select(records, iterations, run_id)
        recorded = {
            (i, purpose): _by_episode(recorder, run_id, i, purpose)
            for i in chosen
            for purpose in ("rollout", "eval")
        }
        evaluated = {c.iteration: c for c in recorded_candidates(recorder, run_id)}
    repo, artifacts = workspace.repo(), workspace.artifacts()
    plans = []
    for i in chosen:
        rec = records[i]
        if rec.rollout is not None:
            plans.append(("rollout", i, rec.rollout.harness_commit, rec.rollout.adapter_tag, rec))
        if i in evaluated:
            plans.append(("eval", i, evaluated[i].harness_commit, evaluated[i].adapter_tag, rec))
    # Everything is read (and every adapter verified) before a model loads: fail fast.
    harnesses = {commit: repo.files_at(commit) for _, _, commit, _, _ in plans}
    adapters = {
        tag: tagged_adapter(repo, artifacts, tag) for _, _, _, tag, _ in plans if tag is not None
    }
    reports = []
    with InMemoryRecorder() as scratch, open_serving(config, scratch, progress=progress) as served:
        for purpose, i, commit, tag, rec in plans:
            adapter = adapters[tag] if tag is not None else None
            if purpose == "rollout":
                served.runner.rollout(
                    RolloutRequest(
                        run_id=run_id,
                        iteration=i,
                        harness_commit=commit,
                        harness=harnesses[commit],
                        adapter_tag=tag,
                        adapter_path=adapter,
                        item_ids=rec.item_ids,
                        seed=iteration_seed(state.seed, i),
                        temperature=config.rollout_temperature,
                    )
                )
            else:
                served.runner.evaluate(
                    EvalRequest(
                        run_id=run_id,
                        iteration=i,
                        split="val",
                        harness_commit=commit,
                        harness=harnesses[commit],
                        adapter_tag=tag,
                        adapter_path=adapter,
                    )
                )
            again = _by_episode(scratch, run_id, i, purpose)
            reports.append(_compare(i, purpose, recorded[i, purpose], again))
    return reports


def _select(records: dict, iterations: Iterable[int] | None, run_id: str) -> list[int]:
    if iterations is None:
        return sorted(records)
    wanted = sorted(set(iterations))
    missing = [i for i in wanted if i not in records]
    if missing:
        known = ", ".join(str(i) for i in sorted(records)) or "none"
        raise SiaError(
            f"run {run_id} has no iteration(s) {', '.join(map(str, missing))} (iterations: {known})"
        )
    return wanted


def _by_episode(
    recorder: Recorder, run_id: str, iteration: int, purpose: str
) -> dict[str, Trajectory]:
    found = read_trajectories(recorder, run_id, iteration=iteration, purpose=purpose)
    return {t.episode.episode_id: t for t in found if t.episode.split in ("train", "val")}


def _compare(
    iteration: int,
    purpose: str,
    recorded: dict[str, Trajectory],
    again: dict[str, Trajectory],
) -> RerunReport:
    divergences = []
    for episode_id, old in recorded.items():
        new = again.get(episode_id)
        item = old.episode.item_id
        base = {"iteration": iteration, "purpose": purpose, "episode_id": episode_id}
        if new is None:
            divergences.append(Divergence(**base, item_id=item, what="missing"))
            continue
        found = _first_difference(old, new)
        if found is not None:
            divergences.append(Divergence(**base, item_id=item, **found))
    calls = sum(len(t.calls) for t in recorded.values())
    return RerunReport(iteration, purpose, len(recorded), calls, tuple(divergences))


def _first_difference(old: Trajectory, new: Trajectory) -> dict[str, Any] | None:
    for index, (a, b) in enumerate(zip(old.calls, new.calls, strict=False)):
        if list(a.prompt_ids) != list(b.prompt_ids):
            return {"what": "prompt", "call": index, "token": _first(a.prompt_ids, b.prompt_ids)}
        if list(a.completion_ids) != list(b.completion_ids):
            token = _first(a.completion_ids, b.completion_ids)
            return {
                "what": "tokens",
                "call": index,
                "token": token,
                "recorded": _at(a.completion_ids, token),
                "rerun": _at(b.completion_ids, token),
            }
    if len(old.calls) != len(new.calls):
        return {"what": "calls", "recorded": len(old.calls), "rerun": len(new.calls)}
    a, b = old.episode, new.episode
    if (a.status, a.reward) != (b.status, b.reward):
        return {"what": "outcome", "recorded": [a.status, a.reward], "rerun": [b.status, b.reward]}
    return None


def _first(a: Sequence[int], b: Sequence[int]) -> int:
    """The first index where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    differ = (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return next(differ, min(len(a), len(b)))


def _at(ids: Sequence[int], index: int) -> int | None:
    return int(ids[index]) if index < len(ids) else None
