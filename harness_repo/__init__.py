"""Git-backed harness history and the content-addressed adapter store.

``HarnessRepo`` keeps every harness edit as a commit on the run's branch ``runs/<run_id>``
and every trained adapter as an annotated tag ``lora/<run_id>/<iteration>`` whose message
is the adapter manifest. ``ArtifactStore`` keeps the adapter folders themselves, addressed
by the sha256 digest that the manifest names.
"""

from harness_repo.artifacts import ArtifactStore, tagged_adapter
from harness_repo.errors import (
    ArtifactCorrupt,
    ArtifactMissing,
    BranchConflict,
    BranchNotFound,
    CommitNotFound,
    HarnessRepoError,
    InvalidHarnessInput,
    RepoNotFound,
    StorageFull,
    TagConflict,
    TagNotFound,
    is_disk_full,
)
from harness_repo.message import compose_message, split_message
from harness_repo.repo import CommitInfo, HarnessRepo, validate_run_id
from harness_repo.trailers import format_trailers, parse_trailers

__all__ = [
    "ArtifactCorrupt",
    "ArtifactMissing",
    "ArtifactStore",
    "BranchConflict",
    "BranchNotFound",
    "CommitInfo",
    "CommitNotFound",
    "HarnessRepo",
    "HarnessRepoError",
    "InvalidHarnessInput",
    "RepoNotFound",
    "StorageFull",
    "TagConflict",
    "TagNotFound",
    "compose_message",
    "format_trailers",
    "is_disk_full",
    "parse_trailers",
    "split_message",
    "tagged_adapter",
    "validate_run_id",
]
