"""Errors raised by the harness repository and the adapter artifact store.

pygit2 and filesystem errors are translated into these at the package boundary, so callers
only ever catch ``HarnessRepoError`` (or ``SiaError``). Every message names the object it is
about: the commit, branch, tag or digest, and the repository or store it was looked up in.
"""

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
    "TagConflict",
    "TagNotFound",
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
