"""Adapter bookkeeping the vLLM backends share: what is loaded by name, which one is active.

The weights themselves live in vLLM (a server or an engine); a backend only remembers
names, so this is the whole of what the two modes have in common.
"""

from __future__ import annotations

import threading
from typing import Any

from sia.models.errors import AdapterError

__all__ = ["AdapterSlots"]


class AdapterSlots:
    """Loaded adapters (name → whatever the backend needs to address them) and the active
    one; subclasses call :meth:`_init_slots` and fill ``_adapters`` when they load one."""

    def _init_slots(self) -> None:
        self._adapters: dict[str, Any] = {}
        self._active: str | None = None
        self._lock = threading.RLock()

    @property
    def active_adapter(self) -> str | None:
        """The adapter later requests use, or ``None`` for the base model."""
        return self._active

    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the loaded adapters, in load order."""
        return tuple(self._adapters)

    def set_adapter(self, name: str | None) -> None:
        """Later requests use adapter ``name``; ``None`` returns to the base model."""
        with self._lock:
            if name is not None:
                self._require(name)
            self._active = name

    def _require(self, name: str) -> Any:
        if name not in self._adapters:
            raise AdapterError(f"no adapter named {name!r} is loaded ({self._known()})")
        return self._adapters[name]

    def _forget(self, name: str) -> Any:
        """Drop ``name`` (the base model becomes active if it was); what addressed it."""
        entry = self._adapters.pop(name)
        if self._active == name:
            self._active = None
        return entry

    def _known(self) -> str:
        return "loaded: " + (", ".join(self._adapters) or "none")
