"""Errors the ledger raises on purpose; every one is a ``SiaError`` with a one-line message."""

from statemachine.errors import SiaError

__all__ = [
    "ConcurrencyConflict",
    "DuplicateEvent",
    "LedgerBusy",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerNotFound",
    "RunNotFound",
    "UnsupportedSchema",
]


class LedgerError(SiaError):
    """Base class of the ledger's errors."""


class DuplicateEvent(LedgerError):
    """An append would write a ``(run_id, seq)`` that is already stored."""


class ConcurrencyConflict(LedgerError):
    """An append was based on a stale view of the run: its last seq moved on."""


class RunNotFound(LedgerError):
    """The ledger holds no event for the run."""


class LedgerBusy(LedgerError):
    """Another process is writing the ledger, or held its file lock past the timeout."""


class LedgerCorrupt(LedgerError):
    """The file exists but is not a readable SIA ledger."""


class LedgerNotFound(LedgerError):
    """A ledger was opened for reading at a path where there is none."""


class UnsupportedSchema(LedgerError):
    """The ledger was written by a newer SIA whose schema this version cannot read."""
