"""The pure core of SIA: phases, events, the fold that rebuilds a run, and what comes next.

This package performs no I/O and imports only the standard library and ``transitions``.
"""

from statemachine.codec import decode, encode
from statemachine.errors import (
    ConfigError,
    IllegalTransition,
    InvalidEvent,
    SiaError,
    StateMachineError,
)
from statemachine.phases import Phase, PhaseMachine, Trigger
from statemachine.planner import Budget, next_step
from statemachine.state import Candidate, Envelope, IterationRecord, RunState, evolve, fold

__all__ = [
    "Budget",
    "Candidate",
    "ConfigError",
    "Envelope",
    "IllegalTransition",
    "InvalidEvent",
    "IterationRecord",
    "Phase",
    "PhaseMachine",
    "RunState",
    "SiaError",
    "StateMachineError",
    "Trigger",
    "decode",
    "encode",
    "evolve",
    "fold",
    "next_step",
]
