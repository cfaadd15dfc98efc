"""The bundled two-digit addition task (``arith-v1``)."""

from tasks.arith.task import ArithConfig, ArithTask, parse_integer

__all__ = ["ArithConfig", "ArithTask", "parse_integer"]
