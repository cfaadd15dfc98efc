"""Errors raised by the orchestration layer (the root :class:`SiaError` lives in the core)."""

from statemachine.errors import ConfigError, SiaError

__all__ = [
    "ConfigError",
    "EffectFailed",
    "Interrupted",
    "NoCandidate",
    "RunExists",
    "RunNotResumable",
    "SiaError",
    "TrainingCancelled",
    "WorkspaceError",
]


class WorkspaceError(SiaError):
    """A workspace that is missing, incomplete or unusable."""


class RunExists(SiaError):
    """``sia run`` with the id of a run that already has events."""


class RunNotResumable(SiaError):
    """``sia resume`` on a run that is finished, failed, or does not exist."""


class EffectFailed(SiaError):
    """A side effect (agent, rollout, training, evaluation) failed for good; the run fails."""


class Interrupted(SiaError):
    """The run was stopped on request; a ``RunInterrupted`` event records where."""


class TrainingCancelled(SiaError):
    """Training stopped between optimiser steps because the run was interrupted."""


class NoCandidate(SiaError):
    """EDIT or TRAIN could not produce a candidate (no training signal, a patch that does
    not apply); the iteration is abandoned with this reason and the run goes on."""
