"""An episode's scratch folder seen from outside: what it holds, watched, and removed.

The file-size limit (``RLIMIT_FSIZE``) bounds one file; a harness writing many files, each
under it, would still fill the disk. The runner therefore measures the scratch folder
while the episode runs (:class:`ScratchWatch`) and kills the episode's process group once
it holds more bytes or entries than its limits allow, and removes the folder afterwards
(:func:`remove_scratch`), so a rollout of many episodes leaves nothing behind either.

Limits of the measure: it polls, so a fast writer can overshoot by what it writes between
two looks (tens of MB on a fast disk); a file the episode unlinked but keeps open is not
seen (each is still bounded by the file-size limit and the open-files limit, and is freed
when the episode is killed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["ScratchWatch", "remove_scratch", "usage"]

_MB = 1024 * 1024
# Often enough that a disk-speed writer overshoots by tens of MB at most.
_MIN_INTERVAL_S = 0.05
# A big folder is walked less often: the watch costs at most ~1/5 of a core.
_COST_FACTOR = 5.0


def usage(root: Path, max_entries: int) -> tuple[int, int]:
    """``(bytes allocated, entries)`` under ``root``; counting stops past ``max_entries``.

    Allocated blocks, not apparent sizes: a sparse file takes no disk. Stopping early keeps
    one look cheap however many files a harness made.
    """
    total, count = 0, 0
    stack = [os.fspath(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = _scan(folder)
        except OSError:
            continue  # removed meanwhile
        with entries:
            for entry in entries:
                count += 1
                if count > max_entries:
                    return total, count
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                blocks = getattr(info, "st_blocks", None)
                total += blocks * 512 if blocks is not None else info.st_size
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
    return total, count


def _scan(folder: str) -> os.ScandirIterator[str]:
    try:
        return os.scandir(folder)
    except PermissionError:
        # The harness may chmod its own folders shut; they are still ours to look into.
        os.chmod(folder, 0o700)
        return os.scandir(folder)


class ScratchWatch:
    """Poll ``scratch`` while an episode runs; past a limit, set :attr:`reason` and
    call ``on_over`` (which kills the episode) once."""

    def __init__(
        self, scratch: Path, max_mb: int, max_files: int, on_over: Callable[[], None]
    ) -> None:
        self.reason: str | None = None
        self._scratch = scratch
        self._max_mb, self._max_files = max_mb, max_files
        self._on_over = on_over
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sia-scratch-watch", daemon=True)

    def __enter__(self) -> ScratchWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> str | None:
        """Measure now; the one-line reason when the folder is over a limit."""
        if self.reason is None:
            size, entries = usage(self._scratch, self._max_files)
            if entries > self._max_files:
                self.reason = f"episode created more than {self._max_files} files in its scratch"
            elif size > self._max_mb * _MB:
                self.reason = f"episode wrote more than {self._max_mb} MB to its scratch"
        return self.reason

    def _watch(self) -> None:
        interval = _MIN_INTERVAL_S
        while not self._stop.wait(interval):
            started = time.monotonic()
            if self.check() is not None:
                self._on_over()
                return
            interval = max(_MIN_INTERVAL_S, _COST_FACTOR * (time.monotonic() - started))


def remove_scratch(root: Path) -> None:
    """Delete ``root`` and all in it, including folders made read-only (by a harness, or
    the runner's read-only harness copy)."""
    with contextlib.suppress(OSError):
        root.chmod(0o700)
    # Top-down: each folder is opened before the walk descends into it.
    for folder, subfolders, _ in os.walk(root):
        for name in subfolders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)
    shutil.rmtree(root, ignore_errors=True)
