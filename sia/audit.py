"""Cross-checks between the ledger, the harness repository and the artifact store.

The ledger's hash chain proves the event log was not edited; these checks prove that what
the log names (commits, tags, adapter files) exists and agrees with it, that nothing in git
claims an event the ledger does not hold, and that no one else committed on a run's branch.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from harness_repo import ArtifactStore, CommitInfo, HarnessRepo
from harness_repo.repo import RUN_TRAILER
from ledger import Problem, Recorder
from statemachine import events as ev
from statemachine.errors import SiaError
from statemachine.replay import envelopes
from statemachine.state import RunState, fold

__all__ = ["Audit", "audit_run", "check_resumable", "foreign_commits", "problem_line"]

#: Problems that ``resume`` settles itself: a commit SIA made whose event never got in.
_SETTLED_BY_RESUME = frozenset({"unrecorded-commit"})
#: Problems with something git or the artifact store no longer holds as the ledger says.
_RESTORABLE = frozenset({"missing-commit", "missing-tag", "tag-mismatch", "artifact"})


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
    state = None
    if not problems:
        # Read only an intact record: a payload that is not JSON is a problem verify has
        # already named (at its seq), not a reason for read to stop the audit.
        records = recorder.read(run_id)
        try:
            envs = envelopes(records)
            state = fold(run_id, envs)
        except SiaError as exc:
            problems.append(Problem(0, "fold", str(exc)))
            envs = []
        problems += _references(run_id, envs, repo, artifacts)
        problems += _foreign(run_id, envs, repo, report.n_events)
    return Audit(run_id, report.n_events, tuple(problems), state)


def problem_line(run_id: str, problems: Sequence[Problem]) -> str:
    """The first problem (seq, kind, detail) and where to see the rest, in one line."""
    first, count = problems[0], len(problems)
    more = f"{count} problems" if count > 1 else "1 problem"
    where = f"`sia verify {run_id}` lists them"
    return f"seq {first.seq}: {first.kind}: {first.detail} ({more}; {where})"


def check_resumable(
    recorder: Recorder, repo: HarnessRepo, artifacts: ArtifactStore, run_id: str
) -> None:
    """Raise ``RunNotResumable`` with one line if the run's record does not hold together.

    Cheap enough to run before a model loads: it reads the ledger and git and hashes the
    run's adapters. A commit of SIA's that never reached the ledger is no obstacle (resume
    adopts or drops it); a missing or corrupt adapter, tag or commit, a broken hash chain,
    and a commit someone else made on the run's branch are.
    """
    from sia.errors import RunNotResumable  # sia.errors is above this module's layer

    audit = audit_run(recorder, repo, artifacts, run_id)
    blocking = [p for p in audit.problems if p.kind not in _SETTLED_BY_RESUME]
    if not blocking:
        return
    first = blocking[0]
    if first.kind == "foreign-commit":
        raise RunNotResumable(f"cannot resume {run_id}: {first.detail}")
    # Something git or the store lost can be put back, or left behind by a branch from an
    # iteration before it; an altered ledger has no such way round.
    remedy = (
        f"; restore what it names, or branch the run from an earlier iteration "
        f"(`sia branch {run_id} --at N`)"
        if first.kind in _RESTORABLE
        else ""
    )
    raise RunNotResumable(f"cannot resume {run_id}: {problem_line(run_id, blocking)}{remedy}")


def foreign_commits(repo: HarnessRepo, run_id: str, recorded: Collection[str]) -> list[CommitInfo]:
    """Commits on the run's branch, above the newest one the ledger records, that SIA did
    not make for this run (no ``Sia-Run: <run_id>`` trailer), newest first.

    Only the part above a recorded commit can hold them: rewriting anything below would
    change the recorded commits' ids, which the reference checks report instead.
    """
    if run_id not in repo.branches():
        return []
    found = []
    for info in repo.log(run_id):
        if info.sha in recorded:
            break
        if info.trailers.get(RUN_TRAILER) != run_id:
            found.append(info)
    return found


def _foreign(run_id: str, envs, repo: HarnessRepo, last_seq: int) -> list[Problem]:
    recorded: list[str] = []
    for env in envs:
        if isinstance(env.event, ev.HarnessCommitted):
            recorded.append(env.event.commit)
        elif isinstance(env.event, ev.RunBranched):
            recorded.append(env.event.harness_commit)
    found = foreign_commits(repo, run_id, set(recorded))
    if not found:
        return []
    newest, oldest = found[0], found[-1]
    # Put the branch back where the hand-made commits started, which keeps any commit of
    # SIA's below them for resume to adopt; a branch replaced wholesale goes back to the
    # newest recorded commit (or away, if the run had none yet).
    base = oldest.parents[0] if oldest.parents else (recorded[-1] if recorded else None)
    where = f"git -C {shlex.quote(str(repo.path))}"
    keep = f"{where} branch kept-{newest.sha[:12]} {newest.sha}"
    back = (
        f" && {where} update-ref refs/heads/runs/{run_id} {base} {newest.sha}"
        if base is not None
        else f" && {where} update-ref -d refs/heads/runs/{run_id} {newest.sha}"
    )
    count = f"{len(found)} commits" if len(found) > 1 else "a commit"
    detail = (
        f"branch runs/{run_id} holds {count} SIA did not make (newest {newest.sha[:12]} "
        f"{newest.subject!r}); SIA will neither build on nor drop it. To keep it on a branch "
        f"of your own and go on, run: {keep}{back}; then: sia resume {run_id}"
    )
    return [Problem(last_seq, "foreign-commit", detail)]


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
                problems.append(Problem(env.seq, "artifact", f"adapter {e.tag}: {exc}"))
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
