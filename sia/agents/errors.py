"""Errors raised by the Meta and Feedback agents."""

from statemachine.errors import SiaError

__all__ = ["AgentError"]


class AgentError(SiaError):
    """An agent that cannot produce a harness or a decision from what it was given."""
