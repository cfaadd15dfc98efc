"""Running one episode in its own process: stripped environment, limits, wall-clock timeout.

Inside the process the sandbox guard (``guard.py``) refuses file access outside the harness
folder, scratch and the Python installation, process spawning and non-loopback sockets; on
Linux with Landlock the kernel enforces the same file allowlist (see ``guard``). Every
refusal reaches the result pipe as a ``{"violation": ...}`` line, and any such line fails
the episode with a ``sandbox`` reason, whatever the harness did with the error.

The process limits (:class:`EpisodeLimits`) are set by the episode itself before the
harness loads (``episode._limit``); the scratch quota is watched from here
(``scratch.ScratchWatch``), since no per-process limit bounds the sum of many files.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sia.runner import episode as _episode_module
from sia.runner import guard as _guard
from sia.runner.errors import RunnerError
from sia.runner.forkserver import ForkedProcess, ForkServer
from sia.runner.scratch import ScratchWatch

__all__ = [
    "EpisodeLimits",
    "LiveProcesses",
    "ProcessOutcome",
    "episode_command",
    "episode_env",
    "landlock_available",
    "run_episode_process",
]

_EPISODE_SCRIPT = Path(_episode_module.__file__).resolve()
# Enough of stderr to explain a crash without flooding a record.
_STDERR_TAIL = 2000
_REAP_TIMEOUT_S = 5.0
# Variables a harness process needs to run Python at all; everything else stays behind.
_KEPT = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")
# Set to "0" in the orchestrator's environment to run episodes without Landlock (debugging).
LANDLOCK_SWITCH = "SIA_EPISODE_LANDLOCK"


# The smallest bounds that still let an interpreter with the client stack start (memory,
# descriptors) or mean anything at all (the rest).
_LEAST = {
    "memory_mb": 64,
    "file_mb": 1,
    "open_files": 32,
    "processes": 1,
    "scratch_mb": 1,
    "scratch_files": 1,
}


@dataclass(frozen=True)
class EpisodeLimits:
    """Per-episode bounds; out-of-range values raise :class:`ValueError`.

    ``timeout_s`` wall clock (and CPU seconds, see :attr:`cpu_seconds`); ``memory_mb``
    address space; ``file_mb`` the largest file it may write; ``open_files`` descriptors
    open at once; ``processes`` threads and processes it may add to what the machine runs
    when it starts (see ``episode._limit`` for what that bound is worth); ``scratch_mb`` and
    ``scratch_files`` what its scratch folder may hold at any time.
    """

    timeout_s: float = 60.0
    memory_mb: int = 2048
    file_mb: int = 64
    open_files: int = 512
    processes: int = 128
    scratch_mb: int = 256
    scratch_files: int = 10_000

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}")
        for name, least in _LEAST.items():
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")

    @property
    def cpu_seconds(self) -> int:
        # CPU time can only be shorter than wall time; the margin covers interpreter start.
        return int(self.timeout_s) + 5

    def job_fields(self) -> dict[str, int]:
        """The process limits as the episode process reads them from its job."""
        return {
            "memory_mb": self.memory_mb,
            "cpu_seconds": self.cpu_seconds,
            "file_mb": self.file_mb,
            "open_files": self.open_files,
            "max_processes": _process_ceiling(self.processes),
        }


@dataclass(frozen=True)
class ProcessOutcome:
    """How one episode process ended: ``status`` is ``ok``, ``error`` or ``timeout``."""

    status: str
    answer: str | None
    reason: str
    duration_ms: float
    stderr_tail: str


def episode_env(scratch: Path) -> dict[str, str]:
    """The whole environment of an episode process: no keys, tokens or user settings."""
    env = {name: os.environ[name] for name in _KEPT if name in os.environ}
    env.setdefault("PATH", os.defpath)
    # No PYTHON* variables: the interpreter runs with -I, which ignores them, and it is the
    # orchestrator's own (venv) interpreter, so ``openai`` is importable without them.
    env.update(
        HOME=str(scratch),
        TMPDIR=str(scratch),
        # A harness's own HTTP stack must reach the loopback gateway directly.
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def _process_ceiling(extra: int) -> int:
    """``RLIMIT_NPROC`` for an episode: room for ``extra`` more threads and processes.

    The kernel counts every task of the episode's *user* against that limit, not the
    episode's own, so a small fixed number would leave an episode no thread at all when its
    user already runs many. The machine's whole task count (``/proc/loadavg``) bounds the
    user's from above; 0 (no limit) where it cannot be read.
    """
    try:
        with open("/proc/loadavg", encoding="ascii") as file:
            return int(file.read().split()[3].split("/")[1]) + extra
    except (OSError, ValueError, IndexError):
        return 0


def landlock_available() -> bool:
    """Whether episodes start inside a Landlock domain (Linux with Landlock, not switched off)."""
    if os.environ.get(LANDLOCK_SWITCH, "1") == "0":
        return False
    return _landlock_abi() > 0


@functools.lru_cache(maxsize=1)
def _landlock_abi() -> int:
    return _guard.landlock_abi()


def episode_command(harness_dir: Path, job: dict[str, Any]) -> list[str]:
    """The command line of an episode process, with the Landlock stage where available."""
    # -I: no PYTHON* variables, no user site, and the script's folder is not on sys.path,
    # so the harness sees only the standard library and site-packages.
    command = [sys.executable, "-I", "-B", str(_EPISODE_SCRIPT)]
    if landlock_available():
        command += ["--landlock", str(_gateway_port(job.get("base_url")))]
    return [*command, str(harness_dir)]


def _gateway_port(base_url: Any) -> int:
    """The gateway's TCP port (0: unknown, and then TCP is left to the guard alone)."""
    try:
        parts = urlsplit(str(base_url))
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return 0


class LiveProcesses:
    """The episode processes running now, so that an interrupted rollout can kill them.

    After :meth:`stop`, a process that is still being started is killed as it registers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processes: set[Any] = set()
        self._stopped = False

    def add(self, process: Any) -> None:
        with self._lock:
            if not self._stopped:
                self._processes.add(process)
                return
        _kill_group(process)

    def discard(self, process: Any) -> None:
        with self._lock:
            self._processes.discard(process)

    def stop(self) -> None:
        """Kill every live process and any started from now on (until :meth:`reset`)."""
        with self._lock:
            self._stopped = True
            processes = list(self._processes)
        for process in processes:
            _kill_group(process)

    def reset(self) -> None:
        with self._lock:
            self._stopped = False


def run_episode_process(
    harness_dir: Path,
    scratch: Path,
    job: dict[str, Any],
    limits: EpisodeLimits,
    fork_server: ForkServer | None = None,
    live: LiveProcesses | None = None,
) -> ProcessOutcome:
    """Run the harness on ``job`` in its own process and classify how it ended.

    With ``fork_server`` the process is forked from it (see ``zygote.py``); without, a
    fresh interpreter is started. The sandbox and the outcome are the same either way.
    ``live`` registers the process while it runs.
    """
    payload = json.dumps({**job, **limits.job_fields()}).encode("utf-8")
    started = time.perf_counter()
    process: subprocess.Popen[bytes] | ForkedProcess | None = None
    try:
        if fork_server is not None:
            # A server that cannot start here (RunnerError) leaves a fresh interpreter.
            with contextlib.suppress(RunnerError):
                process = fork_server.spawn(
                    harness_dir, scratch, episode_env(scratch), _gateway_port(job.get("base_url"))
                )
        if process is None:
            process = subprocess.Popen(
                episode_command(harness_dir, job),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=episode_env(scratch),
                start_new_session=True,
                close_fds=True,
            )
    except OSError as error:
        return ProcessOutcome("error", None, f"cannot start the episode: {error}", 0.0, "")
    if live is not None:
        live.add(process)
    started_process = process  # not Optional: type checkers do not narrow captured names
    watch = ScratchWatch(
        scratch, limits.scratch_mb, limits.scratch_files, lambda: _kill_group(started_process)
    )
    try:
        with watch:
            outcome = _outcome_of(process, payload, limits, started)
    finally:
        # Children the harness spawned share its process group; none may outlive it.
        _kill_group(process)
        if live is not None:
            live.discard(process)
        if isinstance(process, ForkedProcess):
            process.close()
    # Once more after the end: what the episode left between two looks counts too.
    over = watch.check()
    if over is None:
        return outcome
    if outcome.reason.startswith("sandbox"):
        return replace(outcome, reason=f"{outcome.reason} (then: {over})")
    return replace(outcome, status="error", answer=None, reason=over)


def _outcome_of(
    process: subprocess.Popen[bytes] | ForkedProcess,
    payload: bytes,
    limits: EpisodeLimits,
    started: float,
) -> ProcessOutcome:
    try:
        stdout, stderr = process.communicate(payload, timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        try:
            stdout, stderr = process.communicate(timeout=_REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            # A grandchild that left the process group still holds the pipes open.
            process.kill()
            stdout, stderr = b"", b""
        reason = f"episode exceeded {limits.timeout_s:g}s wall clock"
        violations = _violations(_json_lines(stdout))
        if violations:
            return ProcessOutcome(
                "error",
                None,
                f"{_violation_reason(violations, caught=True)} (then: {reason})",
                _elapsed(started),
                _tail(stderr),
            )
        return ProcessOutcome("timeout", None, reason, _elapsed(started), _tail(stderr))
    assert process.returncode is not None
    return _classify(process.returncode, stdout, stderr, _elapsed(started), limits)


def _classify(
    code: int, stdout: bytes, stderr: bytes, duration_ms: float, limits: EpisodeLimits
) -> ProcessOutcome:
    tail = _tail(stderr)
    lines = _json_lines(stdout)
    violations = _violations(lines)
    results = [line for line in lines if isinstance(line, dict) and "ok" in line]
    if violations:
        # Whatever the harness made of the refusal, the episode tried what it may not.
        caught = bool(results) and results[-1].get("ok") is True
        if code == _guard.LOST_CHANNEL_EXIT and not results:
            caught = True
        return ProcessOutcome(
            "error", None, _violation_reason(violations, caught=caught), duration_ms, tail
        )
    if code == _guard.LOST_CHANNEL_EXIT and not results:
        return ProcessOutcome(
            "error",
            None,
            "sandbox violation: the episode closed its result pipe, then was refused",
            duration_ms,
            tail,
        )
    if not results:
        if any(line.strip() for line in stdout.decode("utf-8", "replace").splitlines()):
            return ProcessOutcome(
                "error", None, "episode process printed no JSON result", duration_ms, tail
            )
        if code < 0:
            name = _signal_name(-code)
            if -code == signal.SIGXCPU:
                return ProcessOutcome(
                    "timeout", None, "episode exceeded its CPU time limit", duration_ms, tail
                )
            if -code == getattr(signal, "SIGXFSZ", None):
                reason = f"episode wrote a file past its {limits.file_mb} MB file-size limit"
                return ProcessOutcome("error", None, reason, duration_ms, tail)
            return ProcessOutcome(
                "error", None, f"episode process killed by {name}", duration_ms, tail
            )
        return ProcessOutcome(
            "error",
            None,
            f"episode process exited with code {code} and no result",
            duration_ms,
            tail,
        )
    result = results[-1]
    if not isinstance(result.get("ok"), bool):
        return ProcessOutcome("error", None, "episode result is malformed", duration_ms, tail)
    if not result["ok"]:
        reason = result.get("reason")
        return ProcessOutcome(
            "error", None, str(reason) if reason else "harness failed", duration_ms, tail
        )
    answer = result.get("answer")
    if not isinstance(answer, str):
        return ProcessOutcome("error", None, "episode answer is not text", duration_ms, tail)
    return ProcessOutcome("ok", answer, "", duration_ms, tail)


def _json_lines(stdout: bytes) -> list[Any]:
    """The JSON values on the result pipe, one per line; other lines are skipped."""
    values = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return values


def _violations(lines: list[Any]) -> list[str]:
    return [
        str(line["violation"])
        for line in lines
        if isinstance(line, dict) and "violation" in line and "ok" not in line
    ]


def _violation_reason(violations: list[str], *, caught: bool) -> str:
    """``sandbox: <first refusal>`` or, when the harness carried on, ``sandbox violation:``."""
    first = violations[0][:500]
    more = len(set(violations)) - 1
    suffix = f" (+{more} more)" if more > 0 else ""
    if caught:
        return f"sandbox violation: {first}{suffix} (the harness caught the refusal)"
    return f"sandbox: {first}{suffix}"


def _kill_group(process: subprocess.Popen[bytes] | ForkedProcess) -> None:
    if process.pid <= 0:
        return  # killpg(0) would be our own group
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _elapsed(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _tail(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace")[-_STDERR_TAIL:]
