"""The policy models SIA knows by name, their cache status, and resolution of user input.

A user names a model either by its registry name (fetched and cached on first use) or by
the path of a local Hugging Face model directory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sia.models import embedded
from sia.models.errors import ModelNotCached, ModelNotFound
from sia.models.loading import count_safetensors_params, load_directory
from sia.models.progress import ProgressCallback
from sia.models.spec import ModelInfo, ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["DEFAULT_MODEL", "list_models", "load_model", "model_path", "resolve"]

DEFAULT_MODEL = embedded.EMBEDDED_NAME


@dataclass(frozen=True)
class _Entry:
    spec: ModelSpec
    directory: Callable[[], Path]
    is_cached: Callable[[], bool]
    fetch: Callable[[ProgressCallback | None], Path]


_REGISTRY: dict[str, _Entry] = {
    embedded.EMBEDDED_NAME: _Entry(
        spec=embedded.SMOLLM2_SPEC,
        directory=embedded.embedded_dir,
        is_cached=embedded.is_embedded_cached,
        fetch=lambda progress: embedded.fetch_embedded(progress),
    ),
}


def list_models() -> list[ModelInfo]:
    """Every registered model with whether a loadable copy is cached, by name."""
    infos = []
    for name in sorted(_REGISTRY):
        entry = _REGISTRY[name]
        cached = entry.is_cached()
        infos.append(
            ModelInfo(spec=entry.spec, cached=cached, path=entry.directory() if cached else None)
        )
    return infos


def resolve(name_or_path: str | Path) -> ModelSpec:
    """The spec for a registry name, or for a local directory holding a model.

    A registry name wins over a same-named relative directory, so ``sia run --model X``
    means the same thing whatever the working directory is.
    """
    if isinstance(name_or_path, str) and name_or_path in _REGISTRY:
        return _REGISTRY[name_or_path].spec
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"{path} is a directory but holds no model (no config.json)")
        resolved = path.resolve()
        return ModelSpec(
            name=resolved.name,
            description=f"local model directory {resolved}",
            license="unknown",
            params=count_safetensors_params(resolved),
            source=str(resolved),
        )
    known = ", ".join(sorted(_REGISTRY))
    raise ModelNotFound(
        f"unknown model {str(name_or_path)!r}: use one of {known} or a model directory"
    )


def model_path(
    name_or_path: str | Path, *, fetch: bool = True, progress: ProgressCallback | None = None
) -> Path:
    """The directory to load ``name_or_path`` from, fetching a registered model if needed."""
    spec = resolve(name_or_path)
    entry = _REGISTRY.get(spec.name)
    if entry is None or entry.spec is not spec:
        return Path(spec.source)
    if entry.is_cached():
        return entry.directory()
    if not fetch:
        raise ModelNotCached(f"model {spec.name} is not cached; fetch it first")
    return entry.fetch(progress)


def load_model(
    name_or_path: str | Path,
    *,
    device: str = "cpu",
    fetch: bool = True,
    progress: ProgressCallback | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a registered or local model and its tokenizer (float32, eval mode)."""
    return load_directory(model_path(name_or_path, fetch=fetch, progress=progress), device=device)
