"""A content-addressed store for adapter folders.

Layout under the store root::

    sha256/<digest>/            the adapter folder exactly as it was put; load it from here
    sha256/<digest>.sha256sum   its listing (below); the sha256 of this file is <digest>
    tmp/<pid>-<random>/         a write in progress, renamed into sha256/ once complete

Digest format. The listing of a folder has one line per regular file, in the order of the
files' relative POSIX paths compared as UTF-8 bytes::

    <sha256 of the file's bytes, 64 lowercase hex>  <relative path>\\n

and the folder's digest is the sha256 of the listing's UTF-8 bytes. Timestamps,
permissions, owners and empty folders do not count. The listing is exactly what
``sha256sum`` prints, so the digest can be recomputed without SIA::

    cd DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum

and ``sha256sum -c ../<digest>.sha256sum`` run inside a stored folder checks every file.
Symlinks, special files and paths containing a newline or backslash (which ``sha256sum``
would escape) are refused.

Writes are atomic: a folder is copied into ``tmp/`` (hashing as it copies), synced, then
renamed into place, so a crash leaves at most a temporary folder, which the next ``put``
or ``gc_temp`` removes. A put that fails (a full disk above all) removes its temporary
files itself before raising: the store then holds exactly what it held before.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import secrets
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from harness_repo.errors import (
    ArtifactCorrupt,
    ArtifactMissing,
    HarnessRepoError,
    InvalidHarnessInput,
    StorageFull,
)

if TYPE_CHECKING:
    from harness_repo.repo import HarnessRepo

__all__ = ["ArtifactStore", "tagged_adapter"]

_DIGEST = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
_LISTING_SUFFIX = ".sha256sum"

# Temp folders that puts in this process are writing right now; a crashed earlier process
# may have had the same pid, so the pid in a folder's name alone cannot prove it is live.
_ACTIVE: set[Path] = set()
_ACTIVE_LOCK = threading.Lock()


def _files(folder: Path) -> list[tuple[str, Path]]:
    """Regular files under ``folder`` as (relative POSIX path, absolute path), listing order."""
    if not folder.is_dir() or folder.is_symlink():
        raise InvalidHarnessInput(f"adapter folder {folder} is not a directory")
    found: list[tuple[bytes, str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise):
        base = Path(dirpath)
        for name in (*dirnames, *filenames):
            full = base / name
            rel = full.relative_to(folder).as_posix()
            try:
                key = rel.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InvalidHarnessInput(
                    f"adapter folder {folder}: file name {rel!r} is not UTF-8"
                ) from err
            if "\n" in rel or "\\" in rel:
                raise InvalidHarnessInput(
                    f"adapter folder {folder}: file name {rel!r} contains a newline or backslash"
                )
            if full.is_symlink():
                raise InvalidHarnessInput(f"adapter folder {folder}: {rel} is a symlink")
            if name in filenames:
                if not full.is_file():
                    raise InvalidHarnessInput(
                        f"adapter folder {folder}: {rel} is not a regular file"
                    )
                found.append((key, rel, full))
    found.sort()
    return [(rel, full) for _, rel, full in found]


def _raise(err: OSError) -> None:
    raise err


def _hash_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _listing(folder: Path) -> str:
    return "".join(_listing_line(_hash_file(full), rel) for rel, full in _files(folder))


def _listing_line(file_digest: str, rel: str) -> str:
    return f"{file_digest}  {rel}\n"


def _parse_listing(text: str) -> dict[str, str]:
    entries = {}
    for line in text.splitlines():
        file_digest, sep, rel = line.partition("  ")
        if sep:
            entries[rel] = file_digest
    return entries


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
    """Adapter folders stored by the sha256 digest of their contents."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The store's root folder (created on the first ``put``)."""
        return self._root

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self._root)!r})"

    @staticmethod
    def listing(folder: str | os.PathLike[str]) -> str:
        """The canonical listing of ``folder`` described in the module docstring."""
        try:
            return _listing(Path(folder))
        except OSError as err:
            raise HarnessRepoError(f"cannot read adapter folder {folder}: {err}") from err

    @staticmethod
    def digest_dir(folder: str | os.PathLike[str]) -> str:
        """The content digest of ``folder``: sha256 of its canonical listing."""
        listing = ArtifactStore.listing(folder)
        if not listing:
            raise InvalidHarnessInput(f"adapter folder {folder} contains no files")
        return hashlib.sha256(listing.encode("utf-8")).hexdigest()

    def put(self, src_dir: str | os.PathLike[str]) -> str:
        """Store a copy of ``src_dir`` and return its digest.

        Putting a folder that is already stored verifies the stored copy and keeps it; a
        stored copy that fails verification is replaced by the new one, which by
        construction has the right contents.
        """
        src = Path(src_dir)
        try:
            return self._put(src)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise StorageFull(
                    f"no space left on device while storing adapter {src} in {self._root}; "
                    "nothing was stored"
                ) from err
            raise HarnessRepoError(
                f"cannot store adapter folder {src} in {self._root}: {err}"
            ) from err

    def exists(self, digest: str) -> bool:
        """Whether a folder is stored under ``digest`` (without checking its contents)."""
        return (
            isinstance(digest, str)
            and bool(_DIGEST.fullmatch(digest))
            and (self._dir(digest).is_dir())
        )

    def path(self, digest: str, *, verify: bool = True) -> Path:
        """The stored folder for ``digest``, verified against it unless ``verify=False``."""
        self._check_digest(digest)
        if verify:
            self.verify(digest)
        elif not self._dir(digest).is_dir():
            raise ArtifactMissing(f"artifact sha256:{digest} is not in the store {self._root}")
        return self._dir(digest)

    def verify(self, digest: str) -> None:
        """Recompute the stored folder's digest; raise unless it equals ``digest``."""
        self._check_digest(digest)
        folder = self._dir(digest)
        if not folder.is_dir():
            raise ArtifactMissing(f"artifact sha256:{digest} is not in the store {self._root}")
        try:
            actual = _listing(folder)
        except InvalidHarnessInput as err:
            raise ArtifactCorrupt(f"artifact sha256:{digest} is corrupt: {err}") from err
        except OSError as err:
            raise HarnessRepoError(f"cannot read artifact sha256:{digest}: {err}") from err
        if hashlib.sha256(actual.encode("utf-8")).hexdigest() != digest:
            raise ArtifactCorrupt(
                f"artifact sha256:{digest} in {self._root} is corrupt: "
                f"{self._explain(digest, actual)}"
            )

    def digests(self) -> list[str]:
        """Digests of every stored folder, sorted."""
        store = self._root / "sha256"
        if not store.is_dir():
            return []
        return sorted(p.name for p in store.iterdir() if _DIGEST.fullmatch(p.name) and p.is_dir())

    def gc_temp(self) -> list[Path]:
        """Remove temporary folders left by interrupted puts; return what was removed."""
        tmp_root = self._root / "tmp"
        if not tmp_root.is_dir():
            return []
        removed = []
        for entry in sorted(tmp_root.iterdir()):
            pid_text = entry.name.split("-", 1)[0]
            owner = int(pid_text) if pid_text.isdigit() else None
            with _ACTIVE_LOCK:
                # Siblings named after an active folder (its listing, a discarded copy) too.
                active = any(entry.name.startswith(tmp.name) for tmp in _ACTIVE)
            if active or (owner is not None and owner != os.getpid() and _pid_alive(owner)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        return removed

    # -- internals -----------------------------------------------------------------------

    def _put(self, src: Path) -> str:
        files = _files(src)
        if not files:
            raise InvalidHarnessInput(f"adapter folder {src} contains no files")
        self.gc_temp()
        tmp = self._new_temp()
        try:
            listing = "".join(
                _listing_line(self._copy(full, tmp.joinpath(*rel.split("/"))), rel)
                for rel, full in files
            ).encode("utf-8")
            digest = hashlib.sha256(listing).hexdigest()
            if self.exists(digest):
                try:
                    self.verify(digest)
                except ArtifactCorrupt:
                    pass
                else:
                    recorded = self._dir(digest).with_name(digest + _LISTING_SUFFIX)
                    if not recorded.is_file():
                        self._write_listing(tmp, digest, listing)
                    return digest
            self._install(tmp, digest, listing)
            return digest
        finally:
            self._drop_temp(tmp)

    def _dir(self, digest: str) -> Path:
        return self._root / "sha256" / digest

    @staticmethod
    def _check_digest(digest: str) -> None:
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise InvalidHarnessInput(f"{digest!r} is not a sha256 digest (64 lowercase hex)")

    def _new_temp(self) -> Path:
        # An OSError here (a full disk) reaches ``put``, which names it.
        tmp = self._root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}"
        tmp.mkdir(parents=True)
        with _ACTIVE_LOCK:
            _ACTIVE.add(tmp)
        return tmp

    def _drop_temp(self, tmp: Path) -> None:
        # The folder and its siblings: a listing being written and a copy set aside.
        for leftover in (tmp, *tmp.parent.glob(glob.escape(tmp.name) + "?*")):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        with _ACTIVE_LOCK:
            _ACTIVE.discard(tmp)

    def _write_listing(self, tmp: Path, digest: str, listing: bytes) -> None:
        """Write ``<digest>.sha256sum`` atomically: a full disk must not leave half of it."""
        listing_tmp = tmp.with_name(tmp.name + _LISTING_SUFFIX)
        listing_tmp.write_bytes(listing)
        os.replace(listing_tmp, self._dir(digest).with_name(digest + _LISTING_SUFFIX))

    @staticmethod
    def _copy(src: Path, dst: Path) -> str:
        dst.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with src.open("rb") as reader, dst.open("wb") as writer:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        return digest.hexdigest()

    def _install(self, tmp: Path, digest: str, listing: bytes) -> None:
        store = self._root / "sha256"
        store.mkdir(parents=True, exist_ok=True)
        for folder in sorted({p.parent for p in tmp.rglob("*")}, reverse=True):
            _fsync_dir(folder)
        self._write_listing(tmp, digest, listing)
        final = self._dir(digest)
        if final.exists():
            # Only reached for a copy that failed verification: set it aside, then drop it.
            discard = tmp.with_name(tmp.name + "-discard")
            os.rename(final, discard)
            shutil.rmtree(discard, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # A concurrent put of the same folder got there first; keep its copy if sound.
            self.verify(digest)
        _fsync_dir(store)

    def _explain(self, digest: str, actual: str) -> str:
        recorded = self._dir(digest).with_name(digest + _LISTING_SUFFIX)
        try:
            expected_text = recorded.read_text("utf-8")
        except OSError:
            expected_text = ""
        if hashlib.sha256(expected_text.encode("utf-8")).hexdigest() != digest:
            now = hashlib.sha256(actual.encode("utf-8")).hexdigest()
            return f"its files now hash to sha256:{now}"
        expected, found = _parse_listing(expected_text), _parse_listing(actual)
        problems = [
            f"{rel} changed" for rel in expected if rel in found and found[rel] != expected[rel]
        ]
        problems += [f"{rel} missing" for rel in expected if rel not in found]
        problems += [f"{rel} unexpected" for rel in found if rel not in expected]
        return ", ".join(problems) or "its listing differs"


def tagged_adapter(repo: HarnessRepo, store: ArtifactStore, tag: str) -> Path:
    """The stored folder of the adapter that tag ``tag`` names, its sha256 verified."""
    return store.path(repo.adapter_manifest(tag)["sha256"])
