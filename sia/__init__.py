"""SIA: a local-first, event-sourced self-improving agent loop."""

from statemachine.errors import SiaError

__all__ = ["SiaError", "__version__"]

__version__ = "0.1.0"
