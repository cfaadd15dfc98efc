"""Remote rollout workers: episodes run on other machines, model calls still reach one gateway.

The sandbox lets an episode talk to loopback only, so an episode on another machine cannot
call the orchestrator's gateway directly. An :class:`EpisodeWorker` therefore runs each
episode in its own local sandbox with the job's ``base_url`` pointed at a *relay* on the
worker's loopback address; the relay forwards every model call, episode token and all, to
the gateway the orchestrator named. The gateway authenticates, budgets and records the call
exactly as for a local episode, so the one ledger the orchestrator writes sees everything.

:class:`RemoteEpisodes` is the orchestrator's side: ``HarnessRunner(..., remote=...)`` hands
each episode to the next worker instead of starting a local process.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import itertools
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sia.runner.errors import RunnerError
from sia.runner.forkserver import ForkServer, fork_server_supported
from sia.runner.runner import _write_harness
from sia.runner.sandbox import (
    EpisodeLimits,
    LiveProcesses,
    ProcessOutcome,
    episode_env,
    landlock_available,
    run_episode_process,
)
from sia.runner.scratch import remove_scratch

__all__ = ["EpisodeWorker", "RemoteEpisodes"]

_START_TIMEOUT_S = 10.0
_LOOPBACK = "127.0.0.1"
# Beyond the episode's own timeout: reaping, harness upload, the answer's way back.
_POST_MARGIN_S = 30.0
# Headers a model call needs at the gateway; everything else stays on the worker.
_FORWARDED = ("authorization", "x-sia-episode", "content-type", "accept")
_EPISODE_HEADER = "x-sia-episode"


@dataclass(frozen=True)
class _Relayed:
    """Where the relay sends one episode's calls, and how long a call may take."""

    gateway_url: str
    timeout_s: float


class EpisodeWorker:
    """Run episodes sent by an orchestrator and relay their model calls to its gateway.

    ``POST /episodes`` (bearer ``token``) takes ``{"harness": {path: base64}, "job": ...,
    "limits": {"timeout_s", "memory_mb", ...}}`` (any field of
    :class:`~sia.runner.sandbox.EpisodeLimits`; a missing one takes its default, an
    unknown one is ignored, so orchestrators and workers of other versions still agree)
    and answers the episode's
    :class:`~sia.runner.sandbox.ProcessOutcome` as JSON. ``/relay/v1/...`` is the episode's
    ``base_url``: it answers only on the worker's 127.0.0.1 socket (one of its own when
    ``host`` is another address), for tokens of episodes running here, so the sandbox's
    loopback-only rule holds whatever address the worker is reached on.
    At most ``max_episodes`` episodes run at a time; later ones wait their turn.
    """

    def __init__(
        self,
        token: str,
        *,
        host: str = _LOOPBACK,
        port: int = 0,
        max_episodes: int = 4,
        fork_server: bool = True,
    ) -> None:
        if not token:
            raise RunnerError("a worker needs a non-empty token")
        if max_episodes < 1:
            raise RunnerError(f"max_episodes must be >= 1, got {max_episodes}")
        self._token = token
        self._host = host
        self._port = port
        self._pool = ThreadPoolExecutor(max_episodes, thread_name_prefix="sia-worker-episode")
        self._live = LiveProcesses()
        self._relays: dict[str, _Relayed] = {}
        self._served = 0
        self._lock = threading.Lock()
        self._client: httpx2.AsyncClient | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._relay_url: str | None = None
        self._relay_port = 0
        self._fork_server: ForkServer | None = None
        if fork_server and fork_server_supported():
            self._fork_server = ForkServer(
                episode_env(Path(tempfile.gettempdir())), landlock=landlock_available()
            )

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Start serving (idempotent); the URL an orchestrator posts episodes to."""
        if self._url is not None:
            return self._url
        public = _bound_socket(self._host, self._port)
        sockets = [public]
        relay = public
        if self._host != _LOOPBACK:
            relay = _bound_socket(_LOOPBACK, 0)
            sockets.append(relay)
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": sockets}, name="sia-worker-http", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                for sock in sockets:
                    sock.close()
                raise RunnerError("the worker's HTTP server did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        self._url = f"http://{_url_host(self._host)}:{public.getsockname()[1]}"
        self._relay_port = relay.getsockname()[1]
        self._relay_url = f"http://{_LOOPBACK}:{self._relay_port}/relay/v1"
        return self._url

    @property
    def url(self) -> str:
        if self._url is None:
            raise RunnerError("the worker is not running; call start() first")
        return self._url

    @property
    def episodes_served(self) -> int:
        """Episodes started here so far (for monitoring and load checks)."""
        with self._lock:
            return self._served

    def close(self) -> None:
        """Kill running episodes, stop serving and stop the fork server (for good: the
        episode pool is shut down, so a closed worker is not started again)."""
        self._live.stop()
        server, thread = self._server, self._thread
        self._server = self._thread = self._url = self._relay_url = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=_START_TIMEOUT_S)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._fork_server is not None:
            self._fork_server.close()

    def __enter__(self) -> EpisodeWorker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- HTTP ---------------------------------------------------------------------------

    def _app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                Route("/episodes", self._episodes, methods=["POST"]),
                Route("/relay/v1/{path:path}", self._relay, methods=methods),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # One pooled client on the server's own event loop, closed with it.
        async with httpx2.AsyncClient() as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def _episodes(self, request: Request) -> Response:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._token.encode()
        ):
            return _refusal(401, "unknown worker token")
        try:
            harness, job, limits = _parse_episode(await request.json())
        except (ValueError, TypeError, KeyError) as error:
            return _refusal(400, f"malformed episode request: {error}")
        loop = asyncio.get_running_loop()
        try:
            outcome = await loop.run_in_executor(self._pool, self._run, harness, job, limits)
        except RunnerError as error:
            return _refusal(400, str(error))
        return JSONResponse(asdict(outcome))

    def _run(
        self, harness: Mapping[str, bytes], job: dict[str, Any], limits: EpisodeLimits
    ) -> ProcessOutcome:
        """One episode in this machine's sandbox, its calls relayed while it runs."""
        relay_url = self._relay_url
        if relay_url is None:
            raise RunnerError("the worker is shutting down")
        token = job["token"]
        root = Path(tempfile.mkdtemp(prefix="sia-worker-"))
        try:
            harness_dir = root / "harness"
            _write_harness(harness, harness_dir)
            scratch = root / "scratch"
            scratch.mkdir()
            relayed = _Relayed(str(job["base_url"]).rstrip("/"), limits.timeout_s)
            with self._lock:
                self._relays[token] = relayed
                self._served += 1
            try:
                return run_episode_process(
                    harness_dir,
                    scratch,
                    {**job, "base_url": relay_url},
                    limits,
                    self._fork_server,
                    self._live,
                )
            finally:
                with self._lock:
                    self._relays.pop(token, None)
        finally:
            # The harness folder is read-only (see ``_write_harness``); this opens it too.
            remove_scratch(root)

    async def _relay(self, request: Request) -> Response:
        # Only connections to the loopback socket: nothing off this machine reaches it.
        server = request.scope.get("server")
        if server is None or tuple(server) != (_LOOPBACK, self._relay_port):
            return _refusal(403, "the relay serves this machine's episodes only")
        token = _episode_token(request)
        with self._lock:
            relayed = self._relays.get(token) if token else None
        if relayed is None or self._client is None:
            return _refusal(401, "unknown episode token")
        url = f"{relayed.gateway_url}/{request.path_params['path']}"
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        try:
            reply = await self._client.request(
                request.method,
                url,
                params=request.query_params.multi_items(),
                content=await request.body(),
                headers=headers,
                timeout=relayed.timeout_s + 5.0,
            )
        except httpx2.HTTPError as error:
            return _refusal(502, f"the gateway cannot be reached: {type(error).__name__}")
        kept = {"content-type": reply.headers.get("content-type", "application/json")}
        return Response(reply.content, status_code=reply.status_code, headers=kept)


class RemoteEpisodes:
    """Send episodes to ``workers`` (their base URLs) in turn, with the shared ``token``.

    A worker that cannot be reached or refuses an episode fails that episode alone, with
    a one-line reason naming the worker; the rollout goes on with the next.
    """

    def __init__(self, workers: Sequence[str], token: str) -> None:
        if not workers:
            raise RunnerError("remote episodes need at least one worker")
        self._workers = [url.rstrip("/") for url in workers]
        self._next = itertools.cycle(range(len(self._workers)))
        self._lock = threading.Lock()
        self._token = token
        self._client = httpx2.Client()

    @property
    def workers(self) -> list[str]:
        return list(self._workers)

    def close(self) -> None:
        """Close the HTTP connections to the workers (the workers keep running)."""
        self._client.close()

    def __enter__(self) -> RemoteEpisodes:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, harness_dir: Path, job: dict[str, Any], limits: EpisodeLimits) -> ProcessOutcome:
        """Run one episode on the next worker; its outcome as if it had run here."""
        with self._lock:
            worker = self._workers[next(self._next)]
        started = time.perf_counter()
        try:
            body = {
                "harness": _read_harness(harness_dir),
                "job": job,
                "limits": asdict(limits),
            }
            reply = self._client.post(
                f"{worker}/episodes",
                json=body,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=httpx2.Timeout(limits.timeout_s + _POST_MARGIN_S, connect=10.0),
            )
        except (httpx2.HTTPError, OSError) as error:
            return _failed(worker, f"unreachable ({type(error).__name__}: {error})", started)
        if reply.status_code != 200:
            return _failed(worker, f"answered {reply.status_code}: {_message(reply)}", started)
        try:
            return _outcome(reply.json())
        except (ValueError, TypeError, KeyError) as error:
            return _failed(worker, f"sent a malformed outcome ({error})", started)


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _episode_token(request: Request) -> str | None:
    token = request.headers.get(_EPISODE_HEADER)
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    return token or None


def _parse_episode(body: Any) -> tuple[dict[str, bytes], dict[str, Any], EpisodeLimits]:
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    files, job, limits = body["harness"], body["job"], body["limits"]
    if not isinstance(files, dict) or not isinstance(job, dict) or not isinstance(limits, dict):
        raise ValueError("harness, job and limits must be objects")
    if not isinstance(job.get("token"), str) or not isinstance(job.get("base_url"), str):
        raise ValueError("the job needs a token and a base_url")
    harness = {str(name): base64.b64decode(data, validate=True) for name, data in files.items()}
    return harness, job, _limits(limits)


def _limits(sent: dict[str, Any]) -> EpisodeLimits:
    """The limits an orchestrator sent; ``timeout_s`` and ``memory_mb`` are required."""
    optional = {
        field.name: int(sent[field.name])
        for field in fields(EpisodeLimits)
        if field.name not in ("timeout_s", "memory_mb") and field.name in sent
    }
    # Out-of-range values raise ValueError: a malformed request.
    return EpisodeLimits(float(sent["timeout_s"]), int(sent["memory_mb"]), **optional)


def _read_harness(harness_dir: Path) -> dict[str, str]:
    return {
        path.relative_to(harness_dir).as_posix(): base64.b64encode(path.read_bytes()).decode()
        for path in sorted(harness_dir.rglob("*"))
        if path.is_file()
    }


def _outcome(data: Any) -> ProcessOutcome:
    if not isinstance(data, dict) or data.get("status") not in ("ok", "error", "timeout"):
        raise ValueError("no valid status")
    answer = data["answer"]
    if answer is not None and not isinstance(answer, str):
        raise TypeError("the answer is not text")
    return ProcessOutcome(
        str(data["status"]),
        answer,
        str(data["reason"]),
        float(data["duration_ms"]),
        str(data["stderr_tail"]),
    )


def _failed(worker: str, what: str, started: float) -> ProcessOutcome:
    reason = " ".join(f"worker {worker} {what}".split())[:500]
    return ProcessOutcome("error", None, reason, (time.perf_counter() - started) * 1000.0, "")


def _message(reply: httpx2.Response) -> str:
    try:
        return str(reply.json()["error"]["message"])
    except (ValueError, TypeError, KeyError):
        return reply.text[:200]


def _refusal(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)
