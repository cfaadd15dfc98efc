"""The episode fork server: import the episode stack once, fork one child per episode.

Starting a fresh interpreter per episode costs about half a second of CPU, nearly all of it
``import openai``; on a small CPU box that is more than the model's own work for a short
episode. The runner (``forkserver.py``) therefore starts this script once::

    python -I -B zygote.py <control_fd> [--landlock]

It seals the project off the import path, imports ``episode.py`` (by path), ``openai`` and
the guard, warms what the guard would later refuse (the client's platform probe, Landlock's
ABI check), and says ``ready`` on the control socket. Each request on that socket is a
datagram with a JSON header (``harness_dir``, ``cwd``, ``env``, ``landlock_port``) and four
file descriptors passed with ``SCM_RIGHTS``: the episode's stdin, stdout and stderr, and a
status pipe. The server forks; it writes ``pid <n>`` on the status pipe at once and
``exit <code>`` (``-signal`` when killed by one) when it has reaped the child, then closes
it. The child starts its own session, takes the three descriptors as 0/1/2 and closes every
other, moves to its scratch folder with the episode's environment, enters its own Landlock
domain when asked and runs ``episode.main`` exactly as a freshly started episode would.

Unlike the exec-per-episode path, ``ctypes`` was loaded by this trusted start-up: the guard
drops it from ``sys.modules`` and refuses every ``ctypes.*`` audit event, so a harness that
digs its classes out through ``__subclasses__`` can neither load a library nor call or
address foreign memory. The server exits when its stdin (held open by the runner) closes.

Standard library only, like ``episode.py``: nothing of the project is imported here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import signal
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["main"]

_HERE = Path(__file__).resolve()
_EPISODE = _HERE.with_name("episode.py")
_MAX_HEADER = 1 << 16
_FDS_PER_EPISODE = 4


def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    landlock = "--landlock" in argv[2:]
    episode = _load_episode()
    episode._seal()
    guard = episode._load_guard()
    episode.warm_up()
    if landlock and guard.landlock_abi() < 1:
        control.send(b"error: Landlock is not available")
        return 1
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    control.send(b"ready")
    waiting: dict[int, int] = {}
    while True:
        try:
            readable, _, _ = select.select([control, wake_read, 0], [], [])
        except InterruptedError:
            continue
        if 0 in readable and not os.read(0, 1):
            return 0  # the runner is gone
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 512)
            _reap(waiting)
        if control in readable:
            _serve(control, episode, landlock, waiting)


def _serve(
    control: socket.socket,
    episode: Any,
    landlock: bool,
    waiting: dict[int, int],
) -> None:
    message, fds, _, _ = socket.recv_fds(control, _MAX_HEADER, _FDS_PER_EPISODE)
    if len(fds) != _FDS_PER_EPISODE:
        for fd in fds:
            os.close(fd)
        return
    status = fds[3]
    try:
        header = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except Exception as error:
        _write(status, f"error {type(error).__name__}: {error}\n")
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        _child(header, fds, episode, landlock)  # never returns
    for fd in fds[:3]:
        os.close(fd)
    _write(status, f"pid {pid}\n")
    waiting[pid] = status


def _reap(waiting: dict[int, int]) -> None:
    while waiting:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status = waiting.pop(pid, None)
        if status is not None:
            _write(status, f"exit {os.waitstatus_to_exitcode(wait_status)}\n")
            os.close(status)


def _child(header: dict[str, Any], fds: list[int], episode: Any, landlock: bool) -> None:
    code, stage = 1, "start"
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        # Nothing of the server's (control socket, other episodes' pipes) stays reachable.
        os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 4096)
        os.chdir(header["cwd"])
        os.environ.clear()
        os.environ.update(header["env"])
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = None
        if landlock:
            stage = "confine"
            guard = episode._load_guard()
            episode.confine(guard, header["harness_dir"], int(header["landlock_port"]), (_HERE,))
        stage = "run"
        code = episode.main([str(_EPISODE), header["harness_dir"]])
    except BaseException as error:
        traceback.print_exc()
        reason = f"sandbox: cannot {stage} the episode: {episode._describe(error)}"
        with contextlib.suppress(Exception):
            episode._report(sys.stdout, {"ok": False, "reason": reason})
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _load_episode() -> Any:
    spec = importlib.util.spec_from_file_location("_sia_episode", _EPISODE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_EPISODE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(fd: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, text.encode("utf-8"))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
