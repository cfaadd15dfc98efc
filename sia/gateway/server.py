"""The gateway: an OpenAI-compatible endpoint on loopback in front of the policy backend.

It runs inside the orchestrator process (uvicorn on a background thread), so harness
processes reach the in-process model over HTTP, every call is attributed to an episode by
its bearer token, budgets are enforced at the model boundary, and each call is kept as a
``CallRow`` until the runner hands the rows to the recorder in bulk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ledger.records import CallRow
from sia.gateway.backend import Backend
from sia.gateway.batcher import MicroBatcher
from sia.gateway.episodes import Budget, EpisodeTicket, Refusal
from sia.gateway.errors import GatewayError
from sia.gateway.protocol import ApiError, ParsedCall, completion_response, parse_call
from sia.models.errors import PromptTooLong
from sia.models.generation import Generation, GenRequest

__all__ = ["EPISODE_HEADER", "Gateway"]

#: Alternative to the bearer token for clients that cannot set ``Authorization``.
EPISODE_HEADER = "X-Sia-Episode"

_START_TIMEOUT_S = 10.0
T = TypeVar("T")


class Gateway:
    """Serve ``backend`` at ``start()``'s base URL (``http://<host>:<port>/v1``).

    ``host`` is loopback unless remote workers (``sia.runner.remote``) must reach it.

    ``register_episode`` hands out the token a harness process uses as its API key;
    ``drain_calls`` returns (and forgets) every call recorded so far.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch: int = 8,
        batch_wait_ms: float = 5,
        max_batch_wait_ms: float = 200,
        host: str = "127.0.0.1",
    ) -> None:
        self._backend = backend
        self._host = host
        self._batcher = MicroBatcher(
            backend,
            max_batch=max_batch,
            wait_ms=batch_wait_ms,
            expected=self._idle_episodes,
            max_wait_ms=max_batch_wait_ms,
        )
        self._tickets: dict[str, Budget] = {}
        self._calls: list[CallRow] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._base_url: str | None = None
        self._loaded_adapters: set[str] = set()
        self._token_text = _token_texts(backend)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> str:
        """Start serving (idempotent) and return the base URL for an OpenAI client."""
        if self._base_url is not None:
            return self._base_url
        self._batcher.start()
        sock = socket.socket(
            socket.AF_INET6 if ":" in self._host else socket.AF_INET, socket.SOCK_STREAM
        )
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="sia-gateway-http", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                self._batcher.stop()
                sock.close()
                raise GatewayError("the gateway's HTTP server did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    def stop(self) -> None:
        """Stop serving; recorded calls stay available to ``drain_calls``."""
        server, thread = self._server, self._thread
        self._server = self._thread = self._base_url = None
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(timeout=_START_TIMEOUT_S)
        self._batcher.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise GatewayError("the gateway is not running; call start() first")
        return self._base_url

    @property
    def batch_sizes(self) -> list[int]:
        """The size of every batch passed to the backend so far, in order."""
        return list(self._batcher.batch_sizes)

    # ---- episodes and records -----------------------------------------------------------

    def register_episode(self, ticket: EpisodeTicket) -> str:
        """Admit an episode and return its token (the harness's API key)."""
        if ticket.max_calls < 1 or ticket.max_tokens < 1:
            raise GatewayError(
                f"episode {ticket.episode_id}: max_calls and max_tokens must be >= 1"
            )
        token = "sia-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tickets[token] = Budget(ticket)
        return token

    def release_episode(self, token: str) -> None:
        """Revoke a token: later calls with it are refused as unauthorised."""
        with self._lock:
            self._tickets.pop(token, None)

    def episode_usage(self, token: str) -> tuple[int, int]:
        """``(calls, completion_tokens)`` spent so far by the episode behind ``token``."""
        with self._lock:
            budget = self._tickets.get(token)
        if budget is None:
            raise GatewayError("unknown or released episode token")
        return budget.calls, budget.tokens

    def _idle_episodes(self) -> int:
        """Registered episodes that have not called yet: each is about to send a request.

        One that has called may be finishing instead; waiting for it would idle the model.
        """
        with self._lock:
            return sum(1 for budget in self._tickets.values() if budget.calls == 0)

    def drain_calls(self, episode_id: str | None = None) -> list[CallRow]:
        """Every call recorded since the last drain (of ``episode_id`` only, if given), in
        completion order."""
        with self._lock:
            if episode_id is None:
                rows, self._calls = self._calls, []
            else:
                rows = [row for row in self._calls if row.episode_id == episode_id]
                self._calls = [row for row in self._calls if row.episode_id != episode_id]
        return rows

    def on_model_thread(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread that drives the backend, between batches; its result.

        Torch's OpenMP runtime gives each thread that runs parallel work its own team of
        workers; once the teams outnumber the cores it stops spinning between parallel
        regions, and every region pays for waking its workers: on two cores decoding and
        training both run about 30% slower. Other model work of the process (training,
        scoring) therefore runs here, on the one thread that already has a team.
        """
        return self._batcher.call(fn)

    def use_adapter(self, tag: str | None, path: Path | None = None) -> None:
        """Apply adapter ``tag`` to later calls, loading it from ``path`` the first time.

        Runs on the generation thread, between batches, so no batch straddles a switch.
        """

        def switch() -> None:
            if tag is not None and tag not in self._loaded_adapters:
                loaded = getattr(self._backend, "adapters", ())
                if tag not in loaded:
                    if path is None:
                        raise GatewayError(f"adapter {tag!r} is not loaded and has no path")
                    self._backend.load_adapter(tag, path)
                self._loaded_adapters.add(tag)
            self._backend.set_adapter(tag)

        self._batcher.call(switch)

    # ---- HTTP ---------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._text, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    async def _chat(self, request: Request) -> JSONResponse:
        return await self._serve(request, chat=True)

    async def _text(self, request: Request) -> JSONResponse:
        return await self._serve(request, chat=False)

    async def _models(self, request: Request) -> JSONResponse:
        if self._budget(request) is None:
            return _error(401, "invalid_api_key", "unknown episode token")
        return JSONResponse(
            {"object": "list", "data": [{"id": "policy", "object": "model", "owned_by": "sia"}]}
        )

    async def _serve(self, request: Request, *, chat: bool) -> JSONResponse:
        budget = self._budget(request)
        if budget is None:
            return _error(401, "invalid_api_key", "unknown episode token")
        try:
            call = parse_call(await _json(request), chat=chat)
        except ApiError as error:
            return _error(error.status, error.code, error.message)
        reservation = budget.reserve(call.max_tokens)
        if isinstance(reservation, Refusal):
            return _error(reservation.status, reservation.code, reservation.message)
        index, granted = reservation
        ticket = budget.ticket
        gen_request = GenRequest(
            messages=call.messages,
            prompt=call.prompt,
            max_tokens=granted,
            temperature=call.temperature if ticket.temperature is None else ticket.temperature,
            top_p=call.top_p,
            seed=call.seed if call.seed is not None else _call_seed(ticket, index),
            stop=call.stop,
        )
        started = time.perf_counter()
        try:
            generation = await asyncio.wrap_future(self._batcher.submit(gen_request))
        except PromptTooLong as error:
            budget.settle(granted, 0)
            return _error(400, "context_length_exceeded", str(error))
        except Exception as error:
            budget.settle(granted, 0)
            return _error(500, "generation_failed", f"{type(error).__name__}: {error}")
        latency_ms = (time.perf_counter() - started) * 1000.0
        budget.settle(granted, generation.usage.completion_tokens)
        self._record(ticket, index, call, gen_request, generation, latency_ms)
        body = completion_response(
            call,
            generation,
            call_id=f"sia-{ticket.episode_id}-{index}",
            token_text=self._token_text,
        )
        return JSONResponse(body)

    def _budget(self, request: Request) -> Budget | None:
        token = request.headers.get(EPISODE_HEADER)
        if token is None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            return None
        with self._lock:
            return self._tickets.get(token)

    def _record(
        self,
        ticket: EpisodeTicket,
        index: int,
        call: ParsedCall,
        request: GenRequest,
        generation: Generation,
        latency_ms: float,
    ) -> None:
        sent: Any = call.messages if call.chat else call.prompt
        row = CallRow(
            run_id=ticket.run_id,
            iteration=ticket.iteration,
            episode_id=ticket.episode_id,
            call_index=index,
            ts=time.time(),
            harness_commit=ticket.harness_commit,
            # The weights that produced these tokens, whatever the episode was started with.
            adapter_tag=generation.adapter,
            messages_json=json.dumps(sent, ensure_ascii=False),
            prompt_ids=list(generation.prompt_ids),
            completion_ids=list(generation.completion_ids),
            logprobs=list(generation.logprobs),
            finish_reason=generation.finish_reason,
            latency_ms=latency_ms,
            completion_text=generation.text,
            temperature=request.temperature,
            top_p=request.top_p,
        )
        with self._lock:
            self._calls.append(row)


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(400, "invalid_request_error", f"the body is not JSON: {error}") from None


def _error(status: int, code: str, message: str) -> JSONResponse:
    kind = "invalid_request_error" if status == 400 else code
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": code, "param": None}},
        status_code=status,
    )


def _call_seed(ticket: EpisodeTicket, index: int) -> int | None:
    if ticket.seed is None:
        return None
    digest = hashlib.sha256(f"{ticket.seed}:{ticket.episode_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 2**63


def _token_texts(backend: Backend) -> Any:
    tokenizer = getattr(backend, "tokenizer", None)
    if tokenizer is None:
        return str

    def text(token: int) -> str:
        return tokenizer.decode([token])

    return text
