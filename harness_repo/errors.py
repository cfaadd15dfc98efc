"""Errors raised by the harness repository and the adapter artifact store.

pygit2 and filesystem errors are translated into these at the package boundary, so callers
only ever catch ``HarnessRepoError`` (or ``SiaError``). Every message names the object it is
about: the commit, branch, tag or digest, and the repository or store it was looked up in.
"""

import errno

from statemachine.errors import SiaError

__all__ = [
    "ArtifactCorrupt",
    "ArtifactMissing",
    "BranchConflict",
    "BranchNotFound",
    "CommitNotFound",
    "HarnessRepoError",
    "InvalidHarnessInput",
    "RepoNotFound",
    "StorageFull",
    "TagConflict",
    "TagNotFound",
    "is_disk_full",
]


class HarnessRepoError(SiaError):
    """Base class of every error from ``harness_repo``."""


class RepoNotFound(HarnessRepoError):
    """The path is missing or is not a git repository."""


class InvalidHarnessInput(HarnessRepoError):
    """A run id, file path, trailer, iteration or manifest that cannot be stored as given."""


class CommitNotFound(HarnessRepoError):
    """No commit with that id (or unique id prefix) exists in the repository."""


class BranchNotFound(HarnessRepoError):
    """The run has no branch in the repository."""


class BranchConflict(HarnessRepoError):
    """A branch update would discard or fork history the caller did not expect."""


class TagNotFound(HarnessRepoError):
    """No adapter tag with that name exists, or the tag is not an adapter tag."""


class TagConflict(HarnessRepoError):
    """An adapter tag already exists with a different target or manifest."""


class ArtifactMissing(HarnessRepoError):
    """The artifact store holds no folder for that digest."""


class ArtifactCorrupt(HarnessRepoError):
    """A stored artifact's contents no longer hash to its digest."""


class StorageFull(HarnessRepoError):
    """The disk filled up (ENOSPC) while an adapter was being stored; nothing was stored."""


#: How ENOSPC reads in a message: Python's ``OSError`` text (which a training worker passes
#: on as text) and Rust's ``io::Error`` (safetensors, which writes adapter weights).
_NO_SPACE = (f"[Errno {errno.ENOSPC}]", f"(os error {errno.ENOSPC})")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an error that caused it, is a full disk (ENOSPC)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if any(mark in str(current) for mark in _NO_SPACE):
            return True
        current = current.__cause__ or current.__context__
    return False
