"""Running one episode in its own process: stripped environment, limits, wall-clock timeout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sia.runner import episode as _episode_module

__all__ = ["EpisodeLimits", "ProcessOutcome", "episode_env", "run_episode_process"]

_EPISODE_SCRIPT = Path(_episode_module.__file__).resolve()
# Enough of stderr to explain a crash without flooding a record.
_STDERR_TAIL = 2000
_REAP_TIMEOUT_S = 5.0
# Variables a harness process needs to run Python at all; everything else stays behind.
_KEPT = ("PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT")


@dataclass(frozen=True)
class EpisodeLimits:
    """Per-episode bounds: wall clock, CPU seconds and address space."""

    timeout_s: float = 60.0
    memory_mb: int = 2048

    @property
    def cpu_seconds(self) -> int:
        # CPU time can only be shorter than wall time; the margin covers interpreter start.
        return int(self.timeout_s) + 5


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


def run_episode_process(
    harness_dir: Path, scratch: Path, job: dict[str, Any], limits: EpisodeLimits
) -> ProcessOutcome:
    """Run the harness on ``job`` in a fresh process and classify how it ended."""
    payload = json.dumps(
        {**job, "memory_mb": limits.memory_mb, "cpu_seconds": limits.cpu_seconds}
    ).encode("utf-8")
    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            # -I: no PYTHON* variables, no user site, and the script's folder is not on
            # sys.path, so the harness sees only the standard library and site-packages.
            [sys.executable, "-I", "-B", str(_EPISODE_SCRIPT), str(harness_dir)],
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
        return ProcessOutcome(
            "timeout",
            None,
            f"episode exceeded {limits.timeout_s:g}s wall clock",
            _elapsed(started),
            _tail(stderr),
        )
    finally:
        # Children the harness spawned share its process group; none may outlive it.
        _kill_group(process)
    return _classify(process.returncode, stdout, stderr, _elapsed(started))


def _classify(code: int, stdout: bytes, stderr: bytes, duration_ms: float) -> ProcessOutcome:
    tail = _tail(stderr)
    lines = [line for line in stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        if code < 0:
            name = _signal_name(-code)
            if -code == signal.SIGXCPU:
                return ProcessOutcome(
                    "timeout", None, "episode exceeded its CPU time limit", duration_ms, tail
                )
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
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return ProcessOutcome(
            "error", None, "episode process printed no JSON result", duration_ms, tail
        )
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
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


def _kill_group(process: subprocess.Popen[bytes]) -> None:
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
