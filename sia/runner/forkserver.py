"""The runner's end of the episode fork server (``zygote.py``): start it, fork episodes.

:class:`ForkServer` keeps one server process per runner; :meth:`ForkServer.spawn` returns a
:class:`ForkedProcess`, which has the part of :class:`subprocess.Popen` the sandbox uses
(``pid``, ``communicate`` with a timeout, ``returncode``, ``kill``), so an episode is
classified the same whichever way it was started. POSIX only (``fork``, ``SCM_RIGHTS``).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from sia.runner.errors import RunnerError

__all__ = ["ForkServer", "ForkedProcess", "fork_server_supported"]

_ZYGOTE = Path(__file__).resolve().with_name("zygote.py")
_START_TIMEOUT_S = 60.0
# Fork and the first status line take milliseconds; a loaded machine gets a wide margin.
_PID_TIMEOUT_S = 30.0
_READ_CHUNK = 1 << 16


def fork_server_supported() -> bool:
    """Whether this platform can run episodes through the fork server."""
    return hasattr(os, "fork") and hasattr(socket, "send_fds") and sys.platform != "win32"


class ForkServer:
    """One pre-started episode interpreter that forks a child per episode.

    Started on first use and restarted if it died; :meth:`close` (or garbage collection,
    or this process exiting) stops it. A server that cannot start at all is not tried
    again: :meth:`spawn` raises :class:`RunnerError` and the sandbox starts the episode as
    a fresh interpreter instead.
    """

    def __init__(self, env: Mapping[str, str], *, landlock: bool) -> None:
        self._env = dict(env)
        self._landlock = landlock
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._home: Path | None = None
        # Why the server cannot start here; later episodes then run without it.
        self._broken: str | None = None

    def spawn(
        self, harness_dir: Path, cwd: Path, env: Mapping[str, str], landlock_port: int
    ) -> ForkedProcess:
        """Fork an episode running the harness in ``harness_dir`` from ``cwd`` with ``env``."""
        header = json.dumps(
            {
                "harness_dir": str(harness_dir),
                "cwd": str(cwd),
                "env": dict(env),
                "landlock_port": landlock_port,
            }
        ).encode("utf-8")
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        status_r, status_w = os.pipe()
        theirs = [stdin_r, stdout_w, stderr_w, status_w]
        try:
            with self._lock:
                control = self._started()
                try:
                    socket.send_fds(control, [header], theirs)
                except OSError:
                    # The server died since the last episode: one fresh start, then give up.
                    self._stop()
                    socket.send_fds(self._started(), [header], theirs)
        except BaseException:
            for fd in (*theirs, stdin_w, stdout_r, stderr_r, status_r):
                os.close(fd)
            raise
        for fd in theirs:
            os.close(fd)
        process = ForkedProcess(stdin_w, stdout_r, stderr_r, status_r)
        try:
            process.wait_for_pid(_PID_TIMEOUT_S)
        except BaseException:
            process.close()
            raise
        return process

    def close(self) -> None:
        """Stop the server; episodes already forked run on to their own end."""
        with self._lock:
            self._stop()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit module globals may already be gone; the server then sees its
        # stdin close with this process and exits by itself.
        try:  # noqa: SIM105 - contextlib may be gone at exit
            self._stop()
        except Exception:
            pass

    def _started(self) -> socket.socket:
        if self._broken is not None:
            raise RunnerError(self._broken)
        if self._control is not None and self._process is not None:
            if self._process.poll() is None:
                return self._control
            self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._home = Path(tempfile.mkdtemp(prefix="sia-zygote-"))
        log = self._home / "server.log"
        command = [sys.executable, "-I", "-B", str(_ZYGOTE), str(theirs.fileno())]
        if self._landlock:
            command.append("--landlock")
        try:
            with log.open("wb") as stderr:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    cwd=self._home,
                    env={**self._env, "HOME": str(self._home), "TMPDIR": str(self._home)},
                    pass_fds=[theirs.fileno()],
                    start_new_session=True,
                )
        finally:
            theirs.close()
        self._control = ours
        greeting = self._greeting(ours, self._process)
        if greeting != b"ready":
            tail = log.read_text("utf-8", "replace").strip()
            self._stop()
            self._broken = (
                f"the episode fork server did not start: {greeting.decode(errors='replace')}"
                + (f"; {tail.splitlines()[-1]}" if tail else "")
            )
            raise RunnerError(self._broken)
        return ours

    @staticmethod
    def _greeting(control: socket.socket, process: subprocess.Popen[bytes]) -> bytes:
        """The server's first message; a server that dies first is noticed at once."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([control], [], [], 0.1)
            if ready:
                return control.recv(4096)
            if process.poll() is not None:
                return f"it exited with code {process.returncode}".encode()
        return f"no greeting within {_START_TIMEOUT_S:g}s".encode()

    def _stop(self) -> None:
        process, self._process = self._process, None
        control, self._control = self._control, None
        if control is not None:
            control.close()
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the server's cue to exit
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        home, self._home = self._home, None
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


class ForkedProcess:
    """An episode forked by the server: the subset of ``Popen`` the sandbox relies on."""

    def __init__(self, stdin: int, stdout: int, stderr: int, status: int) -> None:
        self.pid = 0
        self.returncode: int | None = None
        self._stdin: int | None = stdin
        self._pending = b""
        self._input_sent = False
        self._out: dict[int, bytearray] = {stdout: bytearray(), stderr: bytearray()}
        self._stdout, self._stderr, self._status = stdout, stderr, status
        self._status_text = bytearray()
        self._open = {stdout, stderr, status}

    def wait_for_pid(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._status_text:
            left = deadline - time.monotonic()
            if left <= 0 or self._status not in self._open:
                break
            with selectors.DefaultSelector() as selector:
                selector.register(self._status, selectors.EVENT_READ)
                if selector.select(left):
                    self._read(self._status)
        first = self._status_text.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not first.startswith("pid "):
            raise OSError(f"the episode fork server could not fork: {first or 'no reply'}")
        self.pid = int(first.split()[1])

    def communicate(
        self, input: bytes | None = None, timeout: float | None = None
    ) -> tuple[bytes, bytes]:
        """Send ``input`` (first call only), then read until the episode ended and was reaped."""
        if not self._input_sent and input:
            self._pending = input
        self._input_sent = True
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in self._open:
                selector.register(fd, selectors.EVENT_READ)
            if self._stdin is not None:
                if self._pending:
                    selector.register(self._stdin, selectors.EVENT_WRITE)
                else:
                    self._close_stdin()
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired("episode", timeout or 0.0)
                for key, _ in selector.select(left):
                    fd = key.fd
                    if fd == self._stdin:
                        self._write_input(selector)
                    elif not self._read(fd):
                        selector.unregister(fd)
        self._finish()
        return bytes(self._out[self._stdout]), bytes(self._out[self._stderr])

    def kill(self) -> None:
        if self.pid > 0 and self.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        self._close_stdin()
        for fd in list(self._open):
            self._open.discard(fd)
            os.close(fd)

    def _write_input(self, selector: selectors.BaseSelector) -> None:
        assert self._stdin is not None
        try:
            written = os.write(self._stdin, self._pending[:_READ_CHUNK])
        except (BrokenPipeError, OSError):
            written = len(self._pending)  # the episode stopped reading: nothing to send to
        self._pending = self._pending[written:]
        if not self._pending:
            selector.unregister(self._stdin)
            self._close_stdin()

    def _read(self, fd: int) -> bool:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            self._open.discard(fd)
            os.close(fd)
            return False
        if fd == self._status:
            self._status_text += chunk
        else:
            self._out[fd] += chunk
        return True

    def _close_stdin(self) -> None:
        if self._stdin is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin)
            self._stdin = None

    def _finish(self) -> None:
        self.close()
        for line in self._status_text.decode("utf-8", "replace").splitlines():
            if line.startswith("exit "):
                self.returncode = int(line.split()[1])
        if self.returncode is None:
            # The server went away before it could reap the episode.
            self._out[self._stderr] += b"\n[sia] the episode's exit status was lost\n"
            self.returncode = 1
