"""What the registry knows about a model before (or without) loading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from statemachine.errors import ConfigError

__all__ = ["ModelInfo", "ModelSpec"]


@dataclass(frozen=True)
class ModelSpec:
    """A policy model: registry name, what it is, its licence, size and provenance.

    ``params`` is ``None`` for a local directory whose size could not be read without
    loading it. ``source`` is a human-readable pointer to where the weights come from.
    """

    name: str
    description: str
    license: str
    params: int | None
    source: str

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ConfigError("model name must not be empty")
        if self.params is not None and self.params <= 0:
            raise ConfigError(f"model {self.name!r}: params must be positive, got {self.params}")
        if not self.source:
            raise ConfigError(f"model {self.name!r}: source must not be empty")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model and whether a loadable copy is in the local cache."""

    spec: ModelSpec
    cached: bool
    path: Path | None
