"""The root of SIA's error hierarchy.

It lives in ``statemachine`` because that package is the dependency root: every other
package may import it, and it imports nothing but the standard library.
"""

__all__ = ["ConfigError", "IllegalTransition", "InvalidEvent", "SiaError", "StateMachineError"]


class SiaError(Exception):
    """Base class of every error SIA raises on purpose.

    The CLI prints ``str(error)`` as one line and exits non-zero; anything else is a bug.
    """


class StateMachineError(SiaError):
    """A problem in the pure core: an event or transition that the loop does not allow."""


class IllegalTransition(StateMachineError):
    """A phase change that the loop's transition table does not declare."""


class InvalidEvent(StateMachineError):
    """An event that cannot be decoded or does not fit the state it is folded into."""


class ConfigError(SiaError):
    """A configuration value that fails validation."""
