"""The episode process: run one harness ``solve`` against the gateway and print its answer.

Started by the runner as ``python -I episode.py <harness_dir>`` in a scratch directory with
a stripped environment. It reads one JSON job on stdin::

    {"item": {...public item...}, "config": {...harness.json...},
     "base_url": "http://127.0.0.1:<port>/v1", "token": "...",
     "memory_mb": 2048, "cpu_seconds": 65, "file_mb": 64, "open_files": 512,
     "max_processes": 1400, "request_timeout": 60.0}

and prints one JSON line on stdout: ``{"ok": true, "answer": "..."}`` or
``{"ok": false, "reason": "..."}``. Anything the harness itself prints goes to stderr, so
it cannot forge or garble the result line.

Before ``agent.py`` is imported, the sandbox guard (``guard.py``, loaded by path) is
installed: reads only under the harness folder, scratch and the Python installation, writes
only under scratch, no processes, loopback sockets only. Each refused action also writes a
``{"violation": "..."}`` line to the result pipe at once, so the runner fails the episode
even when the harness catches the ``PermissionError``. Started as
``episode.py --landlock <port> <harness_dir>``, the script first confines itself with
Landlock (Linux) and then re-execs itself without the flag: the harness runs in a process
that never loaded ``ctypes`` and can never leave the Landlock domain.

The runner normally does not start this script per episode: ``zygote.py`` imports this
module and ``openai`` once and forks one child per episode, which confines itself and then
calls :func:`main` (see ``zygote.py``). Starting the script directly remains the fallback.

This file imports only the standard library and ``openai``: it runs next to untrusted
harness code and must not pull in the project (whose task modules can rebuild the labels).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

__all__ = ["confine", "main", "warm_up"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_HERE = Path(__file__).resolve()
_GUARD = _HERE.with_name("guard.py")
_LANDLOCK_FLAG = "--landlock"
_guard_module: Any = None
_ssl_context: Any = None


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == _LANDLOCK_FLAG:
        return _confine_and_exec(argv[2], argv[3])
    result = os.fdopen(os.dup(1), "w", encoding="utf-8")
    # From here on fd 1 is stderr: harness prints, even from C code, never reach the result.
    os.dup2(2, 1)
    if len(argv) != 2:
        return _report(result, {"ok": False, "reason": "usage: episode.py <harness_dir>"})
    file_mb = None
    try:
        job = json.loads(sys.stdin.read())
        file_mb = int(job["file_mb"])
        _limit(job)
        _seal()
        guard = _load_guard()
        client = _client(job)
        harness_dir = Path(argv[1])
        # Everything the trusted start-up reads is read before the guard goes up; after
        # it, only the allowlist (and these two files, for tracebacks) can be opened.
        policy = guard.episode_policy(harness_dir, os.getcwd(), extra_read=(_HERE, _GUARD))
        guard.install(policy, result.fileno())
        del guard, policy
        harness = _load_agent(harness_dir)
        answer = harness.solve(client, job["item"], job["config"])
    except SystemExit as stop:
        return _report(result, {"ok": False, "reason": f"harness called sys.exit({stop.code!r})"})
    except MemoryError:
        return _report(result, {"ok": False, "reason": "harness ran out of memory"})
    except BaseException as error:
        traceback.print_exc()
        if isinstance(error, OSError) and error.errno == errno.EFBIG:
            # Only when the harness put SIGXFSZ back to "ignore" (see ``_limit``).
            reason = f"harness wrote a file past its {file_mb} MB file-size limit"
            return _report(result, {"ok": False, "reason": reason})
        return _report(result, {"ok": False, "reason": _describe(error)})
    if answer is None:
        answer = ""
    if not isinstance(answer, str):
        return _report(
            result,
            {"ok": False, "reason": f"solve returned {type(answer).__name__}, not str"},
        )
    return _report(result, {"ok": True, "answer": answer})


def _confine_and_exec(port: str, harness_dir: str) -> int:
    """Stage one: enter a Landlock domain, then become the real episode process."""
    try:
        guard = _load_guard()
        confine(guard, harness_dir, int(port))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-I", "-B", str(_HERE), harness_dir])
    except BaseException as error:
        traceback.print_exc()
        reason = f"sandbox: cannot confine the episode: {_describe(error)}"
        return _report(sys.stdout, {"ok": False, "reason": reason})
    return 1  # not reached: execv does not return


def confine(guard: Any, harness_dir: str, port: int, extra_read: tuple[Path, ...] = ()) -> None:
    """Enter this episode's Landlock domain (TCP only to ``port``; none when it is 0)."""
    policy = guard.episode_policy(harness_dir, os.getcwd(), extra_read=(_HERE, _GUARD, *extra_read))
    if guard.apply_landlock(policy, tcp_ports=[port] if port > 0 else []) < 1:
        raise OSError("Landlock is not available")


def _load_guard() -> Any:
    """``guard.py`` by path: the project is not importable here, and must not be."""
    global _guard_module
    if _guard_module is None:
        spec = importlib.util.spec_from_file_location("_sia_episode_guard", _GUARD)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {_GUARD}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _guard_module = module
    return _guard_module


def _limit(job: dict[str, Any]) -> None:
    """Set this process's resource limits (soft and hard alike) from the job.

    ``RLIMIT_NPROC`` is a weak bound, kept as a backstop only: the kernel counts all tasks
    (threads too) of the *user*, and does not enforce it at all for root or a process with
    ``CAP_SYS_RESOURCE``. What stops a harness from spawning is the guard (every spawn
    call) and, with Landlock, the kernel refusing to ``exec`` anything but Python.
    """
    import resource
    import signal

    mb = 1024 * 1024
    bounds = [
        (resource.RLIMIT_AS, int(job["memory_mb"]) * mb),
        (resource.RLIMIT_CPU, int(job["cpu_seconds"])),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, int(job["file_mb"]) * mb),
        (resource.RLIMIT_NOFILE, int(job["open_files"])),
    ]
    if int(job["max_processes"]) > 0 and hasattr(resource, "RLIMIT_NPROC"):
        bounds.append((resource.RLIMIT_NPROC, int(job["max_processes"])))
    for kind, value in bounds:
        hard = resource.getrlimit(kind)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)  # only a privileged process may raise a hard limit
        resource.setrlimit(kind, (value, value))
    # CPython ignores SIGXFSZ, so a write past RLIMIT_FSIZE would only raise EFBIG, which a
    # harness can catch and carry on; the default action ends the episode at that write.
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)


def _seal() -> None:
    """Take the project off the import path, so the harness cannot import the task code."""
    sys.meta_path[:] = [
        finder
        for finder in sys.meta_path
        if not getattr(finder, "__module__", "").startswith("__editable__")
        and not type(finder).__module__.startswith("__editable__")
    ]
    root = str(_PROJECT_ROOT)
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != root]
    sys.path_hooks[:] = [
        hook
        for hook in sys.path_hooks
        if not getattr(hook, "__module__", "").startswith("__editable__")
    ]
    sys.path_importer_cache.clear()
    for name in [n for n in sys.modules if n.startswith("__editable__")]:
        del sys.modules[name]


def _load_agent(directory: Path) -> Any:
    path = directory / "agent.py"
    if not path.is_file():
        raise FileNotFoundError(f"the harness has no agent.py in {directory}")
    # The harness may split itself into modules next to agent.py.
    sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location("agent", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["agent"] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "solve", None)):
        raise AttributeError("agent.py defines no solve(client, item, config)")
    return module


def warm_up() -> None:
    """Import and pre-build the client stack once, for a server that forks episodes.

    Building an HTTP client loads the system CA bundle (about 20 ms, most of a forked
    episode's start-up); the gateway is plain HTTP on loopback, so one shared context
    built here serves every episode.
    """
    global _ssl_context
    import ssl

    import openai

    _ssl_context = ssl.create_default_context()
    with _StubServer() as base_url:
        warm = openai.OpenAI(
            base_url=base_url,
            api_key="-",
            max_retries=0,
            http_client=openai.DefaultHttpxClient(verify=_ssl_context),
        )
        # Cached for the whole process: a forked episode must not run ``uname`` again.
        with contextlib.suppress(Exception):
            warm.platform_headers()
        # A first call costs ~25 ms of lazy imports and response-model building; make
        # one of each kind here, once, instead of in every forked episode.
        with contextlib.suppress(Exception):
            warm.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": "-"}], max_tokens=1
            )
        with contextlib.suppress(Exception):
            warm.completions.create(model="policy", prompt="-", max_tokens=1, stop=["\n"])
        warm.close()


class _StubServer:
    """A one-thread loopback server answering completion calls with a canned reply."""

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps(_stub_reply(self.path.endswith("/chat/completions")))
                data = body.encode("utf-8")
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = HTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __exit__(self, *exc_info: object) -> None:
        # Nothing may keep running: the caller forks next.
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _stub_reply(chat: bool) -> dict[str, Any]:
    usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    if chat:
        choice: dict[str, Any] = {"message": {"role": "assistant", "content": "0"}}
        kind = "chat.completion"
    else:
        choice = {"text": "0"}
        kind = "text_completion"
    choice.update(index=0, finish_reason="stop", logprobs=None)
    return {
        "id": "warm-up",
        "object": kind,
        "created": 0,
        "model": "policy",
        "choices": [choice],
        "usage": usage,
    }


def _client(job: dict[str, Any]) -> Any:
    import openai

    timeout = float(job.get("request_timeout", 60.0))
    http_client = None
    if _ssl_context is not None:
        http_client = openai.DefaultHttpxClient(verify=_ssl_context, timeout=timeout)
    client = openai.OpenAI(
        base_url=job["base_url"],
        api_key=job["token"],
        max_retries=0,
        timeout=timeout,
        http_client=http_client,
    )
    # The platform headers are computed once and cached; computing them probes the OS
    # (``uname -p`` in a subprocess, /etc/os-release), which the guard would refuse later.
    with contextlib.suppress(Exception):
        client.platform_headers()
    return client


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:500] if first else type(error).__name__


def _report(out: Any, payload: dict[str, Any]) -> int:
    out.write(json.dumps(payload) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # The result is out: threads the harness left running must not hold the process open.
    os._exit(code)
