"""Errors raised by ``rl``: one base class and one for configuration.

``RLConfigError`` is also a :class:`statemachine.errors.ConfigError`, so code that reports
every bad setting the same way catches it without knowing about RL.
"""

from statemachine.errors import ConfigError, SiaError

__all__ = ["RLConfigError", "RLError"]


class RLError(SiaError):
    """Training could not run or produced nothing usable (e.g. the batch has no signal)."""


class RLConfigError(RLError, ConfigError):
    """An unknown algorithm, an unknown setting, or a setting outside its valid range."""
