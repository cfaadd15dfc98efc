"""Cross-checks between the ledger, the harness repository and the artifact store.

The ledger's hash chain proves the event log was not edited; these checks prove that what
the log names (commits, tags, adapter files) exists and agrees with it, and that nothing
in git claims an event the ledger does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness_repo import ArtifactStore, HarnessRepo
from ledger import Problem, Recorder
from statemachine import events as ev
from statemachine.errors import SiaError
from statemachine.replay import envelopes
from statemachine.state import RunState, fold

__all__ = ["Audit", "audit_run"]


@dataclass(frozen=True)
class Audit:
    run_id: str
    events: int
    problems: tuple[Problem, ...]
    state: RunState | None

    @property
    def ok(self) -> bool:
        return not self.problems


def audit_run(
    recorder: Recorder, repo: HarnessRepo, artifacts: ArtifactStore, run_id: str
) -> Audit:
    report = recorder.verify(run_id)
    problems = list(report.problems)
    records = recorder.read(run_id)
    state = None
    if not problems:
        try:
            envs = envelopes(records)
            state = fold(run_id, envs)
        except SiaError as exc:
            problems.append(Problem(0, "fold", str(exc)))
            envs = []
        problems += _references(run_id, envs, repo, artifacts)
    return Audit(run_id, report.n_events, tuple(problems), state)


def _references(run_id, envs, repo: HarnessRepo, artifacts: ArtifactStore) -> list[Problem]:
    problems: list[Problem] = []
    committed: dict[int, str] = {}
    for env in envs:
        e = env.event
        if isinstance(e, ev.HarnessCommitted):
            committed[env.seq] = e.commit
            if not repo.has_commit(e.commit):
                problems.append(
                    Problem(env.seq, "missing-commit", f"commit {e.commit} not in repo")
                )
        elif isinstance(e, ev.AdapterTagged):
            try:
                manifest = repo.adapter_manifest(e.tag)
            except SiaError as exc:
                problems.append(Problem(env.seq, "missing-tag", str(exc)))
                continue
            if manifest.get("sha256") != e.sha256:
                problems.append(
                    Problem(
                        env.seq,
                        "tag-mismatch",
                        f"tag {e.tag} names {manifest.get('sha256')}, ledger names {e.sha256}",
                    )
                )
            try:
                artifacts.verify(e.sha256)
            except SiaError as exc:
                problems.append(Problem(env.seq, "artifact", str(exc)))
    if run_id in repo.branches():
        for info in repo.log(run_id):
            seq = info.trailers.get("Sia-Event")
            if info.trailers.get("Sia-Run") != run_id or seq is None:
                continue  # a branched run's inherited history belongs to its parent
            if committed.get(int(seq)) != info.sha:
                problems.append(
                    Problem(
                        int(seq),
                        "unrecorded-commit",
                        f"commit {info.sha[:12]} claims event {seq}, which does not record it",
                    )
                )
    return sorted(problems, key=lambda p: p.seq)
