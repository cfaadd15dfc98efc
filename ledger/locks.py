"""Cross-process coordination next to the DuckDB file, with ``flock``.

DuckDB's own file lock lasts only while the file is attached, and the recorder attaches it
per unit of work so that other processes can get in between. Two small lock files add what
that leaves out: ``<ledger>.lock`` keeps a second SIA writer out for the whole life of the
first, and ``<ledger>.readers`` lets readers that found the file busy ask the writer to
leave them a gap, so a writer appending in a tight loop cannot starve ``sia status``.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ledger.errors import LedgerBusy

__all__ = ["ReadersWaiting", "WriterLock"]


class WriterLock:
    """An exclusive, non-blocking lock file that records the holder's pid."""

    def __init__(self, lock_path: Path, ledger_path: Path) -> None:
        self._fd: int | None = None
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            if holder is None:
                who = "another process"
                raise LedgerBusy(f"ledger {ledger_path} is being written by {who}") from None
            raise LedgerBusy(
                f"ledger {ledger_path} is being written by pid {holder}{_command(holder)}; "
                f"wait for it to finish, or stop it with: kill {holder}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Clear the pid while still holding the lock, so it never names a later holder.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


class ReadersWaiting:
    """A flag that waiting readers raise (shared locks) and the writer checks (exclusive probe).

    Best effort: where the flag file cannot be created (a read-only folder), readers simply
    wait without raising it.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._probe_fd: int | None = None

    @contextlib.contextmanager
    def raised(self) -> Iterator[None]:
        """Hold the flag up for the duration of the block (reader side)."""
        try:
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            # Blocks only across a writer's momentary probe.
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def any(self) -> bool:
        """Whether some reader currently holds the flag up (writer side)."""
        if self._probe_fd is None:
            try:
                self._probe_fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return False
        try:
            fcntl.flock(self._probe_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe_fd, fcntl.LOCK_UN)
        return False

    def yield_to_readers(self, longest: float, poll: float) -> None:
        """Wait while readers hold the flag up, but never longer than ``longest`` seconds."""
        deadline = time.monotonic() + longest
        while self.any() and time.monotonic() < deadline:
            time.sleep(poll)

    def close(self) -> None:
        if self._probe_fd is not None:
            os.close(self._probe_fd)
            self._probe_fd = None


def _command(pid: int) -> str:
    """`` (<its command line>)``, so the message says which run or resume holds the ledger;
    empty where ``/proc`` cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    program, *args = raw.decode(errors="replace").split("\0") or [""]
    text = " ".join(" ".join([Path(program).name, *args]).split())  # one line, always
    if len(text) > 100:
        text = text[:97] + "..."
    return f" ({text})" if text else ""


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
