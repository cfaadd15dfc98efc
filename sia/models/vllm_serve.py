"""Starting and stopping a ``vllm serve`` subprocess for the ``vllm`` backend.

The server runs in its own process group: vLLM forks engine and worker processes, and
stopping only the parent could leave them holding the GPU. Its output goes to a log file,
not a pipe, so a chatty server never blocks on a full pipe nobody reads; the last line of
that log is what a failed start reports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

from sia.models.errors import ModelLoadError
from sia.models.vllm_config import VLLMConfig
from statemachine.errors import ConfigError

__all__ = ["INSTALL_HINT", "VLLMServer", "check_installed", "serve_command"]

INSTALL_HINT = "pip install 'sia[gpu]' on a CUDA machine"
_POLL_S = 0.25
_STOP_GRACE_S = 30.0


def check_installed(config: VLLMConfig) -> None:
    """Refuse, before a run starts, a vllm mode this machine cannot run (attach needs
    nothing local)."""
    import importlib.util

    if config.serve and shutil.which("vllm") is None:
        raise ConfigError(f"--vllm-serve needs `vllm` on PATH; {INSTALL_HINT}")
    if config.in_process and "vllm" not in sys.modules and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            f"the vllm backend in process needs the vllm package (or pass --endpoint URL of "
            f"a running server); {INSTALL_HINT}"
        )


def serve_command(executable: str, config: VLLMConfig, port: int) -> list[str]:
    """The ``vllm serve`` command line for ``config`` on ``port``.

    ``--logprobs-mode processed_logprobs``: the logprobs vLLM reports are then those of the
    distribution it sampled from (after temperature and top-p), which is what the ledger's
    logprobs mean and what PPO-style ratios divide by.
    """
    command = [executable, "serve", config.model, "--host", config.host, "--port", str(port)]
    command += ["--enable-lora", "--max-lora-rank", str(config.max_lora_rank)]
    command += ["--max-loras", str(config.max_loras)]
    command += ["--tensor-parallel-size", str(config.tensor_parallel_size)]
    command += ["--data-parallel-size", str(config.data_parallel_size)]
    command += ["--gpu-memory-utilization", f"{config.gpu_memory_utilization:g}"]
    command += ["--logprobs-mode", "processed_logprobs"]
    if config.served_model_name:
        command += ["--served-model-name", config.served_model_name]
    return [*command, *config.serve_args]


class VLLMServer:
    """A running ``vllm serve``; :meth:`start` returns once its ``/health`` answers 200."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
        self._process = process
        self.base_url = base_url
        self.log = log

    @classmethod
    def start(cls, config: VLLMConfig) -> VLLMServer:
        executable = shutil.which("vllm")
        if executable is None:
            raise ModelLoadError(f"`vllm` is not on PATH; {INSTALL_HINT}")
        port = config.port or _free_port(config.host)
        host = "127.0.0.1" if config.host in ("0.0.0.0", "::", "") else config.host
        # Adapters are loaded and unloaded over HTTP while the server runs.
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        fd, log_name = tempfile.mkstemp(prefix="sia-vllm-", suffix=".log")
        log = Path(log_name)
        with os.fdopen(fd, "wb") as sink:
            try:
                process = subprocess.Popen(
                    serve_command(executable, config, port),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            except OSError as error:
                log.unlink(missing_ok=True)
                raise ModelLoadError(f"cannot start `vllm serve`: {error}") from None
        server = cls(process, f"http://{host}:{port}/v1", log)
        try:
            server._wait_healthy(config.startup_timeout_s)
        except BaseException:
            server.stop(keep_log=True)
            raise
        return server

    @property
    def pid(self) -> int:
        return self._process.pid

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, *, keep_log: bool = False) -> None:
        """Stop the server and everything it started (idempotent)."""
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait()
        if not keep_log:
            self.log.unlink(missing_ok=True)

    def _signal(self, signum: int) -> None:
        # The group is the one start_new_session created for our own child: its id is the
        # child's pid, so nothing else is reached.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signum)

    def _wait_healthy(self, timeout_s: float) -> None:
        health = self.base_url.removesuffix("/v1") + "/health"
        deadline = time.monotonic() + timeout_s
        with httpx2.Client() as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise ModelLoadError(
                        f"`vllm serve` exited with code {code} before it was ready: "
                        f"{_last_line(self.log)} (log: {self.log})"
                    )
                with contextlib.suppress(httpx2.HTTPError):
                    if client.get(health, timeout=5.0).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise ModelLoadError(
                        f"`vllm serve` was not healthy at {health} within {timeout_s:g} s "
                        f"(log: {self.log})"
                    )
                time.sleep(_POLL_S)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "::") else "0.0.0.0", 0))
        return int(sock.getsockname()[1])


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    if not lines:
        return "no output"
    line = " ".join(lines[-1].split())
    return line[:300] + "…" if len(line) > 300 else line
