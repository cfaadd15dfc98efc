"""Where fetched models live on disk, and how a cache entry is written so that it is whole.

An entry is a directory with a manifest; it appears under its final name only by a rename
of a fully written staging directory, so a crash mid-fetch leaves a stray staging directory
(cleaned up on the next fetch) and never a half-written model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sia.models.errors import ModelFetchError
from sia.models.progress import ProgressCallback, report

__all__ = [
    "MANIFEST_NAME",
    "atomic_directory",
    "cache_root",
    "models_dir",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]

MANIFEST_NAME = "sia-manifest.json"
_CHUNK = 1 << 20
_STAGING_PREFIX = ".staging-"


def cache_root() -> Path:
    """``$SIA_CACHE`` if set, else the platform's user cache directory for ``sia``."""
    override = os.environ.get("SIA_CACHE")
    if override:
        return Path(override).expanduser()
    # platformdirs is imported here so that importing this module stays cheap for the CLI.
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sia"))


def models_dir() -> Path:
    """The directory that holds one subdirectory per fetched model."""
    return cache_root() / "models"


def sha256_file(path: Path, progress: ProgressCallback | None = None, stage: str = "verify") -> str:
    """Hex sha256 of a file, read in chunks so large weights do not sit in memory twice."""
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    report(progress, stage, 0, total)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            report(progress, stage, done, total)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a cache entry, or ``None`` if the entry is missing or unreadable."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` as the entry's manifest (pretty, sorted, so diffs are readable)."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST_NAME).write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(dest: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory that becomes ``dest`` when the block succeeds.

    If another process published ``dest`` meanwhile, its entry is kept and ours dropped,
    unless ``replace`` is set. On an exception the staging directory is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(dest)
    staging = dest.parent / f"{_STAGING_PREFIX}{dest.name}-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
        _publish(staging, dest, replace=replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, dest: Path, *, replace: bool) -> None:
    if dest.exists():
        if not replace and read_manifest(dest) is not None:
            return
        # An entry without a manifest is debris from an older layout; it is never trusted.
        aside = dest.parent / f"{_STAGING_PREFIX}{dest.name}-old-{uuid.uuid4().hex[:12]}"
        try:
            dest.rename(aside)
        except OSError as error:
            raise ModelFetchError(f"cannot replace cache entry {dest}: {error}") from error
        shutil.rmtree(aside, ignore_errors=True)
    try:
        staging.rename(dest)
    except OSError as error:
        if read_manifest(dest) is not None:
            return
        raise ModelFetchError(f"cannot publish cache entry {dest}: {error}") from error


def _remove_stale_staging(dest: Path) -> None:
    # Staging directories of this entry older than an hour belong to a crashed fetch; a
    # younger one may be a concurrent fetch still writing, so it is left alone.
    cutoff = time.time() - 3600
    for stray in dest.parent.glob(f"{_STAGING_PREFIX}{dest.name}-*"):
        try:
            if stray.stat().st_mtime < cutoff:
                shutil.rmtree(stray, ignore_errors=True)
        except OSError:
            continue
