"""Errors raised by the model gateway."""

from statemachine.errors import SiaError

__all__ = ["GatewayError"]


class GatewayError(SiaError):
    """The gateway cannot start, is used before it started, or was given a bad episode."""
