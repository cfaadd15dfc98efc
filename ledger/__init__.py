"""The event store: an append-only, hash-chained ledger of a run's events, plus bulk
trajectory tables (model calls, episodes), in DuckDB or in memory."""

from ledger.chain import GENESIS, canonical_json, event_hash, verify_chain
from ledger.duck import DuckDBRecorder
from ledger.errors import (
    ConcurrencyConflict,
    DuplicateEvent,
    LedgerBusy,
    LedgerCorrupt,
    LedgerError,
    LedgerNotFound,
    RunNotFound,
    UnsupportedSchema,
)
from ledger.memory import InMemoryRecorder
from ledger.recorder import Recorder
from ledger.records import (
    CallRow,
    EpisodeRow,
    EventRecord,
    NewEvent,
    Problem,
    RunHead,
    VerifyReport,
)

__all__ = [
    "GENESIS",
    "CallRow",
    "ConcurrencyConflict",
    "DuckDBRecorder",
    "DuplicateEvent",
    "EpisodeRow",
    "EventRecord",
    "InMemoryRecorder",
    "LedgerBusy",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerNotFound",
    "NewEvent",
    "Problem",
    "Recorder",
    "RunHead",
    "RunNotFound",
    "UnsupportedSchema",
    "VerifyReport",
    "canonical_json",
    "event_hash",
    "verify_chain",
]
