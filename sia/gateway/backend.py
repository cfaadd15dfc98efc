"""What the gateway needs of a policy model: batched generation and adapter switching."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from sia.models.generation import Generation, GenRequest

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A policy backend as the gateway drives it (``HFPolicy`` is one).

    ``generate`` returns one :class:`Generation` per request, in request order. The gateway
    calls every method from a single worker thread, so implementations need not be
    thread-safe on its account.
    """

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]: ...

    def load_adapter(self, name: str, path: str | Path) -> None: ...

    def set_adapter(self, name: str | None) -> None: ...
