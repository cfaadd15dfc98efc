"""The harness repository: a bare git repository whose history is the story of every run.

Layout inside the repository:

* ``refs/heads/runs/<run_id>`` — one branch per run; each commit is one harness edit, a full
  snapshot of the harness folder, with the rationale as message and ``Sia-Run``,
  ``Sia-Iteration`` and ``Sia-Event`` trailers.
* ``refs/tags/lora/<run_id>/<iteration>`` — one annotated tag per trained adapter, on the
  harness commit it was trained with; the tag message carries the adapter manifest as JSON.

Commits are built in memory with tree builders; there is no working tree and no index, so
several runs can write to one repository without stepping on each other's checkout.
Author, committer and tagger are a fixed identity with caller-supplied time, so the same
inputs always yield the same object ids: re-doing an edit after a crash reproduces the
commit instead of forking history.
"""

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2
from pygit2.enums import FileMode, ObjectType, RepositoryOpenFlag, SortMode

from harness_repo.errors import (
    BranchConflict,
    BranchNotFound,
    CommitNotFound,
    HarnessRepoError,
    InvalidHarnessInput,
    RepoNotFound,
    TagConflict,
    TagNotFound,
)
from harness_repo.message import compose_message, split_message
from harness_repo.trailers import validate_trailers

__all__ = [
    "IDENTITY_EMAIL",
    "IDENTITY_NAME",
    "RUN_TRAILER",
    "CommitInfo",
    "HarnessRepo",
    "validate_run_id",
]

IDENTITY_NAME = "SIA"
IDENTITY_EMAIL = "sia@localhost"
RUN_TRAILER = "Sia-Run"

_BRANCH_PREFIX = "refs/heads/runs/"
_TAG_PREFIX = "refs/tags/"
_ADAPTER_PREFIX = "lora/"
_RUN_ID = re.compile(r"[A-Za-z0-9._-]+")
_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DESCRIPTION = (
    "SIA harness repository: one branch runs/<run_id> per run, one annotated tag "
    "lora/<run_id>/<iteration> per trained adapter"
)


def validate_run_id(run_id: str) -> str:
    """Return ``run_id`` unchanged, or raise ``InvalidHarnessInput`` if it cannot name a branch.

    Beyond ``[A-Za-z0-9._-]+``, git forbids ref components that start with ``.``, end with
    ``.`` or ``.lock``, or contain ``..``; those are rejected here with the same message.
    """
    if (
        not isinstance(run_id, str)
        or not _RUN_ID.fullmatch(run_id)
        or not pygit2.reference_is_valid_name(_BRANCH_PREFIX + run_id)
    ):
        raise InvalidHarnessInput(
            f"run id {run_id!r} must be letters, digits, '.', '_' or '-', not start or end "
            "with '.', not contain '..' and not end with '.lock'"
        )
    return run_id


@dataclass(frozen=True)
class CommitInfo:
    """One harness commit as read back from git.

    ``body`` is the message between the subject and the trailer block; ``time`` is the
    committer time in unix seconds.
    """

    sha: str
    parents: tuple[str, ...]
    subject: str
    message: str
    trailers: dict[str, str]
    time: int
    body: str


def _check_when(when: float) -> int:
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise InvalidHarnessInput(f"time {when!r} must be a finite number of unix seconds")
    if when < 0:
        raise InvalidHarnessInput(f"time {when!r} must not be before 1970")
    return int(when)


def _signature(when: float) -> pygit2.Signature:
    # UTC offset 0: the same instant always serialises the same way, whatever the host zone.
    return pygit2.Signature(IDENTITY_NAME, IDENTITY_EMAIL, _check_when(when), 0)


def _split_path(path: str) -> tuple[str, ...]:
    if not isinstance(path, str) or not path:
        raise InvalidHarnessInput(f"harness file path {path!r} must be a non-empty string")
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", "..") or part.lower() == ".git" or "\\" in part or "\0" in part:
            raise InvalidHarnessInput(
                f"harness file path {path!r} must be relative, use '/' separators and "
                "contain no empty, '.', '..' or '.git' components"
            )
    return parts


def _canonical_manifest(manifest: Mapping[str, Any]) -> str:
    if not isinstance(manifest, Mapping):
        raise InvalidHarnessInput(
            f"adapter manifest must be a mapping, got {type(manifest).__name__}"
        )
    digest = manifest.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise InvalidHarnessInput(
            f"adapter manifest needs 'sha256' as 64 lowercase hex digits, got {digest!r}"
        )
    try:
        return json.dumps(
            dict(manifest), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise InvalidHarnessInput(f"adapter manifest is not plain JSON: {err}") from err


def _adapter_summary(run_id: str, iteration: int, manifest: Mapping[str, Any]) -> str:
    details = []
    if manifest.get("algorithm") is not None:
        details.append(str(manifest["algorithm"]))
    if manifest.get("rank") is not None:
        details.append(f"rank {manifest['rank']}")
    details.append(f"sha256 {manifest['sha256'][:12]}…")
    return f"LoRA adapter for run {run_id} iteration {iteration}: {', '.join(details)}"


class HarnessRepo:
    """A git repository of harness snapshots and adapter tags. Build with ``init``/``open``."""

    def __init__(self, repo: pygit2.Repository, path: Path) -> None:
        self._repo = repo
        self._path = path

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> "HarnessRepo":
        """Open the repository at ``path``, creating a bare one if nothing is there yet."""
        target = Path(path)
        if target.exists() and not (target.is_dir() and not any(target.iterdir())):
            return cls.open(target)
        with _translated(f"cannot create harness repository at {target}"):
            repo = pygit2.init_repository(str(target), bare=True, description=_DESCRIPTION)
        return cls(repo, target)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "HarnessRepo":
        """Open an existing repository; ``RepoNotFound`` if ``path`` is not one."""
        target = Path(path)
        if not target.exists():
            raise RepoNotFound(f"harness repository {target} does not exist")
        try:
            # NO_SEARCH: a plain folder inside some other checkout must not open that checkout.
            repo = pygit2.Repository(str(target), RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError as err:
            raise RepoNotFound(f"{target} is not a git repository: {err}") from err
        return cls(repo, target)

    @property
    def path(self) -> Path:
        """The folder the repository was opened from."""
        return self._path

    def __repr__(self) -> str:
        return f"HarnessRepo({str(self._path)!r})"

    # -- names ---------------------------------------------------------------------------

    @staticmethod
    def run_branch(run_id: str) -> str:
        """The branch name of a run: ``runs/<run_id>``."""
        return "runs/" + validate_run_id(run_id)

    @staticmethod
    def adapter_tag_name(run_id: str, iteration: int) -> str:
        """The adapter tag name of a run's iteration: ``lora/<run_id>/<iteration>``."""
        validate_run_id(run_id)
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise InvalidHarnessInput(f"iteration {iteration!r} must be an int >= 0")
        return f"{_ADAPTER_PREFIX}{run_id}/{iteration}"

    # -- commits -------------------------------------------------------------------------

    def commit(
        self,
        run_id: str,
        files: Mapping[str, bytes],
        *,
        message: str,
        trailers: Mapping[str, str],
        when: float,
        parent: str | None = None,
    ) -> str:
        """Record a full snapshot of the harness folder on the run's branch; return its sha.

        ``files`` maps POSIX relative paths (``"prompts/system.txt"``) to contents; files
        absent from it are absent from the snapshot. ``message`` is the rationale.
        ``trailers`` are appended after it, preceded by ``Sia-Run: <run_id>`` unless given.

        ``parent=None`` commits on top of the branch tip, or starts the branch with a root
        commit. An explicit ``parent`` must be the tip of an existing branch
        (``BranchConflict`` otherwise); on a missing branch it starts the branch there.
        """
        ref_name = _BRANCH_PREFIX + validate_run_id(run_id)
        stamped = self._stamp(run_id, trailers)
        text = compose_message(message, stamped)
        signature = _signature(when)
        tip = self.branch_tip(run_id)
        if parent is None:
            parents = [tip] if tip is not None else []
        else:
            base = str(self._commit(parent).id)
            if tip is not None and tip != base:
                raise BranchConflict(
                    f"branch runs/{run_id} is at {tip[:12]}, not at the expected parent {base[:12]}"
                )
            parents = [base]
        tree = self._write_tree(files)
        with _translated(f"cannot write commit on branch runs/{run_id} in {self._path}"):
            oid = self._repo.create_commit(None, signature, signature, text, tree, parents)
        self._move_ref(ref_name, str(oid), expected=tip)
        return str(oid)

    def has_commit(self, sha: str) -> bool:
        """Whether ``sha`` (full or a unique prefix) names a commit in this repository."""
        try:
            self._commit(sha)
        except CommitNotFound:
            return False
        return True

    def commit_info(self, sha: str) -> CommitInfo:
        """Read one commit's subject, body, trailers, parents and time."""
        return self._info(self._commit(sha))

    def files_at(self, commit: str) -> dict[str, bytes]:
        """The harness snapshot at ``commit``: every file path (POSIX) to its bytes."""
        files: dict[str, bytes] = {}
        self._collect(self._commit(commit).tree, "", files)
        return files

    def materialize(self, commit: str, dest: str | os.PathLike[str]) -> Path:
        """Write the harness snapshot at ``commit`` into ``dest`` (absent or empty); return it.

        This is how a harness gets a real folder to run from in its own process.
        """
        files = self.files_at(commit)
        target = Path(dest)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise InvalidHarnessInput(f"cannot write harness into {target}: it is not empty")
        try:
            target.mkdir(parents=True, exist_ok=True)
            for rel, data in files.items():
                out = target.joinpath(*rel.split("/"))
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        except OSError as err:
            raise HarnessRepoError(f"cannot write harness into {target}: {err}") from err
        return target

    def diff(self, a: str, b: str, *, context_lines: int = 3) -> str:
        """Unified patch text turning the snapshot at ``a`` into the one at ``b``."""
        patch = self._diff(a, b, context_lines).patch
        return patch or ""

    def changed_files(self, a: str, b: str) -> list[str]:
        """Sorted paths added, removed or modified between the snapshots ``a`` and ``b``."""
        paths: set[str] = set()
        for delta in self._diff(a, b, 0).deltas:
            paths.add(delta.old_file.path)
            paths.add(delta.new_file.path)
        return sorted(paths)

    # -- branches ------------------------------------------------------------------------

    def branch_tip(self, run_id: str) -> str | None:
        """The sha at the tip of the run's branch, or ``None`` if the run has no branch."""
        ref = self._repo.references.get(_BRANCH_PREFIX + validate_run_id(run_id))
        return None if ref is None else str(ref.peel(pygit2.Commit).id)

    def branches(self) -> list[str]:
        """Run ids that have a branch, sorted."""
        return sorted(
            name[len(_BRANCH_PREFIX) :]
            for name in self._repo.references
            if name.startswith(_BRANCH_PREFIX)
        )

    def create_branch(self, run_id: str, at_commit: str) -> str:
        """Start the run's branch at ``at_commit``; a no-op if it is already there.

        Returns the branch name. ``BranchConflict`` if the branch exists elsewhere.
        """
        ref_name = _BRANCH_PREFIX + validate_run_id(run_id)
        sha = str(self._commit(at_commit).id)
        tip = self.branch_tip(run_id)
        if tip == sha:
            return self.run_branch(run_id)
        if tip is not None:
            raise BranchConflict(
                f"branch runs/{run_id} already exists at {tip[:12]}, not at {sha[:12]}"
            )
        self._move_ref(ref_name, sha, expected=None)
        return self.run_branch(run_id)

    def reset_branch(self, run_id: str, to_commit: str) -> None:
        """Move the run's branch back to ``to_commit``, dropping the commits after it.

        Used on resume to discard a commit that reached git but never reached the ledger.
        Only moves backwards: ``to_commit`` must be the tip or one of its ancestors.
        """
        ref_name = _BRANCH_PREFIX + validate_run_id(run_id)
        tip = self.branch_tip(run_id)
        if tip is None:
            raise BranchNotFound(f"run {run_id} has no branch runs/{run_id} in {self._path}")
        sha = str(self._commit(to_commit).id)
        if sha == tip:
            return
        if not self._repo.descendant_of(tip, sha):
            raise BranchConflict(
                f"cannot reset branch runs/{run_id} to {sha[:12]}: it is not an ancestor of "
                f"the tip {tip[:12]}"
            )
        self._move_ref(ref_name, sha, expected=tip)

    def keep_rejected(self, run_id: str, sha: str) -> str:
        """Keep a rejected candidate reachable under ``rejected/<run_id>/<iteration>``.

        The run branch then moves back to the best commit; the tag keeps the candidate in
        ``git log --all`` so the history of what was tried stays complete. Idempotent.
        """
        info = self.commit_info(sha)
        iteration = info.trailers.get("Sia-Iteration", info.sha[:12])
        name = f"{_TAG_PREFIX}rejected/{validate_run_id(run_id)}/{iteration}"
        existing = self._repo.references.get(name)
        if existing is None:
            self._repo.references.create(name, info.sha)
        elif str(existing.target) != info.sha:
            raise TagConflict(f"{name[len(_TAG_PREFIX) :]} already names {existing.target}")
        return name[len(_TAG_PREFIX) :]

    def log(self, run_id: str) -> list[CommitInfo]:
        """The run branch's history, newest first, including ancestors from a parent run."""
        tip = self.branch_tip(run_id)
        if tip is None:
            raise BranchNotFound(f"run {run_id} has no branch runs/{run_id} in {self._path}")
        return [self._info(commit) for commit in self._walk(tip)]

    def find_commit(self, run_id: str, trailers: Mapping[str, str]) -> str | None:
        """The newest commit on the run's branch whose trailers include all of ``trailers``.

        ``Sia-Run`` defaults to ``run_id``: a branched run's history holds its parent run's
        commits too, and their ``Sia-Event`` numbers come from another ledger sequence.
        Returns ``None`` when nothing matches or the run has no branch.
        """
        wanted = {RUN_TRAILER: validate_run_id(run_id), **trailers}
        tip = self.branch_tip(run_id)
        if tip is None:
            return None
        for commit in self._walk(tip):
            _, _, found = split_message(commit.message)
            if all(found.get(key) == value for key, value in wanted.items()):
                return str(commit.id)
        return None

    # -- adapter tags --------------------------------------------------------------------

    def tag_adapter(
        self,
        run_id: str,
        iteration: int,
        target: str,
        manifest: Mapping[str, Any],
        *,
        when: float,
    ) -> str:
        """Create the annotated tag ``lora/<run_id>/<iteration>`` on commit ``target``.

        The tag message is a one-line summary, a blank line, and the manifest as canonical
        JSON (sorted keys, two-space indent). The manifest must hold the artifact digest
        under ``"sha256"``; ``"algorithm"`` and ``"rank"``, when present, go in the summary.
        Re-tagging with the same target and manifest returns the existing tag name;
        anything else is a ``TagConflict``.
        """
        name = self.adapter_tag_name(run_id, iteration)
        canonical = _canonical_manifest(manifest)
        sha = str(self._commit(target).id)
        signature = _signature(when)
        if self._repo.references.get(_TAG_PREFIX + name) is None:
            text = f"{_adapter_summary(run_id, iteration, manifest)}\n\n{canonical}\n"
            try:
                self._repo.create_tag(name, sha, ObjectType.COMMIT, signature, text)
                return name
            except pygit2.AlreadyExistsError:
                pass  # another writer won the race; compare with what it wrote below
            except pygit2.GitError as err:
                raise HarnessRepoError(f"cannot create tag {name} in {self._path}: {err}") from err
        try:
            existing_target = self.tag_target(name)
            existing = _canonical_manifest(self.adapter_manifest(name))
        except (TagNotFound, InvalidHarnessInput) as err:
            raise TagConflict(f"tag {name} already exists and is not an adapter tag") from err
        if existing_target != sha:
            raise TagConflict(
                f"tag {name} already points at {existing_target[:12]}, not {sha[:12]}"
            )
        if existing != canonical:
            raise TagConflict(f"tag {name} already exists with a different manifest")
        return name

    def adapter_manifest(self, tag_name: str) -> dict[str, Any]:
        """The manifest stored in an adapter tag's message."""
        tag = self._tag(tag_name)
        _, _, payload = tag.message.partition("\n\n")
        try:
            manifest = json.loads(payload)
        except ValueError as err:
            raise TagNotFound(f"tag {tag.name} carries no adapter manifest: {err}") from err
        if not isinstance(manifest, dict):
            raise TagNotFound(f"tag {tag.name} carries no adapter manifest object")
        return manifest

    def adapter_tags(self, run_id: str) -> list[str]:
        """The run's adapter tag names, in iteration order."""
        prefix = f"{_TAG_PREFIX}{_ADAPTER_PREFIX}{validate_run_id(run_id)}/"
        found = []
        for name in self._repo.references:
            suffix = name[len(prefix) :]
            if name.startswith(prefix) and suffix.isdigit():
                found.append((int(suffix), name[len(_TAG_PREFIX) :]))
        return [name for _, name in sorted(found)]

    def tag_target(self, tag_name: str) -> str:
        """The sha of the commit an adapter tag points at."""
        return str(self._tag(tag_name).peel(pygit2.Commit).id)

    # -- internals -----------------------------------------------------------------------

    @staticmethod
    def _stamp(run_id: str, trailers: Mapping[str, str]) -> dict[str, str]:
        given = trailers.get(RUN_TRAILER)
        if given is not None and given != run_id:
            raise InvalidHarnessInput(
                f"trailer {RUN_TRAILER}: {given} contradicts the commit's run {run_id}"
            )
        stamped = {RUN_TRAILER: run_id}
        stamped.update((key, value) for key, value in trailers.items() if key != RUN_TRAILER)
        validate_trailers(stamped)
        return stamped

    def _commit(self, rev: str) -> pygit2.Commit:
        if not isinstance(rev, str) or not _HEX.fullmatch(rev):
            raise CommitNotFound(f"{rev!r} is not a commit id (4 to 40 hex digits)")
        try:
            obj = self._repo.get(rev) if len(rev) == 40 else self._repo[rev]
        except (KeyError, ValueError) as err:
            kind = "is ambiguous" if isinstance(err, pygit2.AmbiguousError) else "not found"
            raise CommitNotFound(f"commit {rev} {kind} in {self._path}") from err
        if obj is None:
            raise CommitNotFound(f"commit {rev} not found in {self._path}")
        if not isinstance(obj, pygit2.Commit):
            raise CommitNotFound(f"{rev} is a {obj.type_str}, not a commit, in {self._path}")
        return obj

    def _tag(self, tag_name: str) -> pygit2.Tag:
        name = tag_name.removeprefix(_TAG_PREFIX) if isinstance(tag_name, str) else ""
        ref = None
        if name and pygit2.reference_is_valid_name(_TAG_PREFIX + name):
            ref = self._repo.references.get(_TAG_PREFIX + name)
        if ref is None:
            raise TagNotFound(f"tag {tag_name!r} not found in {self._path}")
        obj = self._repo[ref.target]
        if not isinstance(obj, pygit2.Tag):
            raise TagNotFound(f"tag {name} is a lightweight tag, not an adapter tag")
        return obj

    def _info(self, commit: pygit2.Commit) -> CommitInfo:
        subject, body, trailers = split_message(commit.message)
        return CommitInfo(
            sha=str(commit.id),
            parents=tuple(str(p) for p in commit.parent_ids),
            subject=subject,
            message=commit.message,
            trailers=trailers,
            time=commit.commit_time,
            body=body,
        )

    def _walk(self, tip: str) -> Iterator[pygit2.Commit]:
        # Topological order so that equal timestamps still list children before parents.
        return iter(self._repo.walk(tip, SortMode.TOPOLOGICAL | SortMode.TIME))

    def _diff(self, a: str, b: str, context_lines: int) -> pygit2.Diff:
        old, new = self._commit(a).tree, self._commit(b).tree
        return old.diff_to_tree(new, context_lines=context_lines)

    def _collect(self, tree: pygit2.Tree, prefix: str, out: dict[str, bytes]) -> None:
        for entry in tree:
            path = prefix + entry.name
            obj = self._repo[entry.id]
            if isinstance(obj, pygit2.Tree):
                self._collect(obj, path + "/", out)
            elif isinstance(obj, pygit2.Blob):
                out[path] = obj.data

    def _write_tree(self, files: Mapping[str, bytes]) -> pygit2.Oid:
        if not isinstance(files, Mapping):
            raise InvalidHarnessInput(
                f"harness files must be a mapping of path to bytes, got {type(files).__name__}"
            )
        root: dict[str, Any] = {}
        for path, data in files.items():
            parts = _split_path(path)
            if not isinstance(data, bytes | bytearray | memoryview):
                raise InvalidHarnessInput(
                    f"harness file {path} must be bytes, got {type(data).__name__}"
                )
            node = root
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise InvalidHarnessInput(f"harness path {path} runs through a file")
            if parts[-1] in node:
                raise InvalidHarnessInput(f"harness path {path} is both a file and a folder")
            node[parts[-1]] = bytes(data)
        with _translated(f"cannot write harness tree in {self._path}"):
            return self._write_node(root)

    def _write_node(self, node: dict[str, Any]) -> pygit2.Oid:
        builder = self._repo.TreeBuilder()
        for name, child in node.items():
            if isinstance(child, dict):
                builder.insert(name, self._write_node(child), FileMode.TREE)
            else:
                builder.insert(name, self._repo.create_blob(child), FileMode.BLOB)
        return builder.write()

    def _move_ref(self, ref_name: str, sha: str, *, expected: str | None) -> None:
        # Compare-and-swap under git's ref lock: a concurrent writer to the same branch gets
        # a BranchConflict instead of silently losing a commit.
        try:
            with self._repo.transaction() as txn:
                txn.lock_ref(ref_name)
                ref = self._repo.references.get(ref_name)
                current = None if ref is None else str(ref.target)
                if current != expected:
                    raise BranchConflict(
                        f"branch {ref_name.removeprefix('refs/heads/')} moved to "
                        f"{(current or 'nothing')[:12]} while updating it from "
                        f"{(expected or 'nothing')[:12]}"
                    )
                txn.set_target(ref_name, sha, message=f"sia: {ref_name} -> {sha}")
        except pygit2.GitError as err:
            raise HarnessRepoError(f"cannot update {ref_name} in {self._path}: {err}") from err
        # A fresh bare repository's HEAD names a branch that never gets commits; pointing it
        # at the first run makes plain `git log` in the repository show something.
        if self._repo.head_is_unborn:
            with _translated(f"cannot point HEAD at {ref_name} in {self._path}"):
                self._repo.set_head(ref_name)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except pygit2.GitError as err:
        raise HarnessRepoError(f"{what}: {err}") from err
    except OSError as err:
        raise HarnessRepoError(f"{what}: {err}") from err
