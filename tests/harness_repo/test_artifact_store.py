import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness_repo import ArtifactCorrupt, ArtifactMissing, ArtifactStore, InvalidHarnessInput


def adapter(folder: Path, weights: bytes = b"\x00\x01weights") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 8}\n')
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "extra").mkdir()
    (folder / "extra" / "notes.txt").write_text("trained on iteration 3\n")
    return folder


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def test_digest_is_sha256_of_a_sha256sum_listing(tmp_path):
    src = adapter(tmp_path / "a")
    lines = [
        f"{hashlib.sha256((src / rel).read_bytes()).hexdigest()}  {rel}\n"
        for rel in ("adapter_config.json", "adapter_model.safetensors", "extra/notes.txt")
    ]
    assert ArtifactStore.listing(src) == "".join(lines)
    expected = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert ArtifactStore.digest_dir(src) == expected


def test_digest_matches_the_shell_recipe(tmp_path):
    if not all(shutil.which(tool) for tool in ("find", "sort", "xargs", "sha256sum")):
        pytest.skip("GNU findutils/coreutils are not installed")
    src = adapter(tmp_path / "a")
    recipe = "find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
    out = subprocess.run(
        ["sh", "-c", recipe], cwd=src, capture_output=True, text=True, check=True
    ).stdout
    assert out.split()[0] == ArtifactStore.digest_dir(src)


def test_digest_ignores_timestamps_and_permissions(tmp_path):
    a = adapter(tmp_path / "a")
    b = adapter(tmp_path / "b")
    os.utime(b / "adapter_config.json", (0, 0))
    (b / "adapter_model.safetensors").chmod(0o600)
    (b / "empty_dir").mkdir()
    assert ArtifactStore.digest_dir(a) == ArtifactStore.digest_dir(b)
    (b / "extra" / "notes.txt").write_text("changed\n")
    assert ArtifactStore.digest_dir(a) != ArtifactStore.digest_dir(b)


def test_put_then_get_and_verify(store, tmp_path):
    src = adapter(tmp_path / "a")
    digest = store.put(src)
    assert digest == ArtifactStore.digest_dir(src)
    stored = store.path(digest)
    assert stored == store.root / "sha256" / digest
    assert (stored / "extra" / "notes.txt").read_text() == "trained on iteration 3\n"
    assert store.exists(digest)
    assert store.digests() == [digest]
    store.verify(digest)
    listing = (store.root / "sha256" / f"{digest}.sha256sum").read_bytes()
    assert hashlib.sha256(listing).hexdigest() == digest
    assert list((store.root / "tmp").iterdir()) == []


def test_put_is_idempotent(store, tmp_path):
    first = store.put(adapter(tmp_path / "a"))
    second = store.put(adapter(tmp_path / "b"))
    assert first == second
    assert store.digests() == [first]
    other = store.put(adapter(tmp_path / "c", weights=b"other"))
    assert store.digests() == sorted([first, other])


def test_tampered_file_is_corrupt_and_named(store, tmp_path):
    digest = store.put(adapter(tmp_path / "a"))
    (store.path(digest) / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(ArtifactCorrupt) as caught:
        store.path(digest)
    assert digest in str(caught.value)
    assert "adapter_model.safetensors changed" in str(caught.value)
    assert store.path(digest, verify=False).is_dir()


def test_added_and_removed_files_are_named(store, tmp_path):
    digest = store.put(adapter(tmp_path / "a"))
    folder = store.path(digest)
    (folder / "extra" / "notes.txt").unlink()
    (folder / "stray.bin").write_bytes(b"x")
    with pytest.raises(ArtifactCorrupt, match=r"extra/notes.txt missing.*stray.bin unexpected"):
        store.verify(digest)


def test_put_repairs_a_corrupt_copy(store, tmp_path):
    src = adapter(tmp_path / "a")
    digest = store.put(src)
    (store.path(digest) / "adapter_config.json").write_text("{}")
    assert store.put(src) == digest
    store.verify(digest)


def test_deleted_artifact_is_missing(store, tmp_path):
    digest = store.put(adapter(tmp_path / "a"))
    shutil.rmtree(store.root / "sha256" / digest)
    assert not store.exists(digest)
    with pytest.raises(ArtifactMissing, match=digest):
        store.path(digest)
    with pytest.raises(ArtifactMissing, match=digest):
        store.path(digest, verify=False)
    with pytest.raises(ArtifactMissing):
        store.verify(digest)
    assert store.digests() == []


def test_unknown_and_malformed_digests(store):
    with pytest.raises(ArtifactMissing):
        store.path("0" * 64)
    with pytest.raises(InvalidHarnessInput, match="sha256 digest"):
        store.path("xyz")
    assert not store.exists("xyz")
    assert store.digests() == []


def test_leftover_temp_dir_from_a_crash_is_cleaned(store, tmp_path):
    dead_pid = 2**22 + 12345  # above Linux's pid_max, so no live process has it
    crashed = store.root / "tmp" / f"{dead_pid}-0123abcd"
    (crashed / "half").mkdir(parents=True)
    (crashed / "half" / "adapter_model.safetensors").write_bytes(b"partial")
    orphan_listing = store.root / "tmp" / f"{dead_pid}-0123abcd.sha256sum"
    orphan_listing.write_text("partial")
    assert sorted(store.gc_temp()) == [crashed, orphan_listing]
    assert list((store.root / "tmp").iterdir()) == []

    (crashed / "half").mkdir(parents=True)
    store.put(adapter(tmp_path / "a"))
    assert not crashed.exists()


def test_temp_dirs_of_live_processes_are_kept(store):
    live = store.root / "tmp" / f"{os.getppid()}-feedface"
    live.mkdir(parents=True)
    assert store.gc_temp() == []
    assert live.is_dir()


def test_unstorable_folders_are_refused(store, tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(InvalidHarnessInput, match="no files"):
        store.put(empty)
    with pytest.raises(InvalidHarnessInput, match="not a directory"):
        store.put(tmp_path / "missing")
    linked = adapter(tmp_path / "linked")
    (linked / "link").symlink_to(linked / "adapter_config.json")
    with pytest.raises(InvalidHarnessInput, match="symlink"):
        store.put(linked)
    newline = adapter(tmp_path / "newline")
    (newline / "bad\nname").write_text("x")
    with pytest.raises(InvalidHarnessInput, match="newline"):
        store.put(newline)
    assert store.digests() == []
