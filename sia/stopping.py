"""Ctrl-C and SIGTERM as a ``KeyboardInterrupt`` raised only where raising one is safe.

Python raises ``KeyboardInterrupt`` at whatever bytecode the main thread happens to run,
and two places turn that into a wrong ending for a run that was stopped cleanly:

- code compiled from a string, which ``dataclasses`` and ``namedtuple`` run each time a
  module defining one is imported (model code is imported lazily, at the start of a phase,
  exactly when a stop is likely). CPython marks an interrupt that leaves such code as
  unhandled, and at exit kills the process with SIGINT (status -2) even though the run
  caught it, recorded the stop and asked for exit status 130;
- a finalizer (``__del__``, a weakref callback), where the exception is printed and
  dropped, and the run goes on as if nothing had been asked.

A signal that lands there is sent again to the main thread a moment later, until it lands
somewhere safe. :meth:`StopSignals.requested` also says that a stop was asked for, so a
loop can check it between steps should an interrupt be swallowed anyway.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["StopSignals", "stop_signals"]

#: How long a signal that landed in unsafe code waits before it is sent again.
_RETRY_S = 0.02
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """SIGINT and SIGTERM handling for one command: see the module docstring."""

    def __init__(self) -> None:
        self._received: str | None = None
        self._closed = False
        self._retry: threading.Timer | None = None
        self._lock = threading.Lock()

    def requested(self) -> str | None:
        """The name of the first stop signal received ("SIGINT", "SIGTERM"), if any."""
        return self._received

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self._closed:
            return
        self._received = self._received or signal.Signals(signum).name
        if _safe(frame):
            raise KeyboardInterrupt(self._received)
        with self._lock:
            if self._retry is None:
                self._retry = threading.Timer(_RETRY_S, self._send_again, (signum,))
                self._retry.daemon = True
                self._retry.start()

    def _send_again(self, signum: int) -> None:
        # Under the lock, so that once close() has it no signal can still be on its way.
        with self._lock:
            if self._retry is None:
                return  # closed meanwhile
            self._retry = None
            # To the main thread itself: a process-wide signal may go to any thread, and
            # only one sent to the main thread wakes it from a blocking wait.
            main = threading.main_thread().ident
            assert main is not None
            signal.pthread_kill(main, signum)

    def close(self) -> None:
        """Ignore further signals and wait out a pending retry (so none arrives later)."""
        self._closed = True
        with self._lock:
            retry, self._retry = self._retry, None
        if retry is not None:
            retry.cancel()
            retry.join()


def _safe(frame: FrameType | None) -> bool:
    """Whether raising in ``frame`` reaches the caller as a plain, handled exception."""
    while frame is not None:
        code = frame.f_code
        name = code.co_filename
        compiled = name.startswith("<") and not name.startswith("<frozen ")
        if compiled and code.co_name == "<module>" and frame.f_back is not None:
            # Inside exec() or eval() of a string ("<string>", "<attrs generated init …>");
            # the outermost frame is exempt: under `python -c` it is the program itself.
            return False
        if name.startswith("<frozen importlib"):
            return False  # mid-import: the module may be half defined
        if code.co_name == "__del__" or name.endswith("weakref.py"):
            return False
        frame = frame.f_back
    return True


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Handle SIGINT and SIGTERM with a :class:`StopSignals` (main thread only) for the
    block, then put the previous handlers back."""
    stop = StopSignals()
    previous = {signum: signal.signal(signum, stop.handle) for signum in _SIGNALS}
    try:
        yield stop
    finally:
        stop.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
