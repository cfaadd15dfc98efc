"""Algorithm name → algorithm class, and validated configs by name.

Importing this module loads no torch or peft, so a Decision's algorithm and settings can
be checked before anything heavy starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from types import MappingProxyType

from rl.algorithms import (
    DPO,
    GRPO,
    PPOGAE,
    Algorithm,
    AlgorithmConfig,
    BestOfNBC,
    Entropic,
    ReinforceKL,
)
from rl.errors import RLConfigError

__all__ = ["ALGORITHMS", "algorithm_config", "get_algorithm"]

ALGORITHMS: Mapping[str, type[Algorithm]] = MappingProxyType(
    {cls.name: cls for cls in (PPOGAE, GRPO, Entropic, ReinforceKL, DPO, BestOfNBC)}
)


def get_algorithm(name: str) -> type[Algorithm]:
    """The algorithm class registered as ``name``; RLConfigError naming the known ones."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(ALGORITHMS))
        raise RLConfigError(f"unknown RL algorithm {name!r}; known: {known}") from None


def algorithm_config(name: str, overrides: Mapping | None = None) -> AlgorithmConfig:
    """The validated config of algorithm ``name``: its defaults updated by ``overrides``.

    An unknown algorithm, an unknown setting or a bad value raises RLConfigError with a
    one-line message (unknown names list the known ones).
    """
    config_class = get_algorithm(name).Config
    overrides = dict(overrides or {})
    known = [spec.name for spec in fields(config_class)]
    unknown = sorted(str(key) for key in overrides if key not in known)
    if unknown:
        raise RLConfigError(
            f"unknown {name} setting{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}"
        )
    return config_class(**overrides)
