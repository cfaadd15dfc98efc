"""A loopback stand-in for the Anthropic Messages API, for tests only.

``FakeClaude`` serves ``POST /v1/messages`` on 127.0.0.1 and answers each request with
whatever its ``brain(request_body)`` returns (content blocks and a stop reason), wrapped in
the API's message shape with deterministic usage numbers. It keeps every request it
received (headers and body), so tests can check what reached "Claude": the prompts, the
tools, the API key header.

Outages are scripted: :meth:`FakeClaude.fail_next` answers the next requests with API
errors (429, 529, 500, with their headers), and ``outage(body)``, when set, picks a failure
for any request it returns one for. ``statuses`` and ``arrivals`` (monotonic seconds) say
how and when each request was answered, so retries and their waits can be checked.
"""

from __future__ import annotations

import difflib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Brain = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str]]


@dataclass(frozen=True)
class Failure:
    """An error answer of the Messages API: its status, error type, message and headers."""

    status: int
    kind: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        error = {"type": self.kind, "message": self.message}
        return json.dumps({"type": "error", "error": error}).encode()


def overloaded(message: str = "Overloaded", headers: dict[str, str] | None = None) -> Failure:
    return Failure(529, "overloaded_error", message, headers or {})


def rate_limited(message: str = "Rate limited", headers: dict[str, str] | None = None) -> Failure:
    return Failure(429, "rate_limit_error", message, headers or {})


def server_error(message: str = "Internal error", headers: dict[str, str] | None = None) -> Failure:
    return Failure(500, "api_error", message, headers or {})


def usage_for(body: dict[str, Any], content: list[dict[str, Any]]) -> dict[str, int]:
    """Deterministic token counts: about four characters per token."""
    return {
        "input_tokens": len(json.dumps(body)) // 4,
        "output_tokens": max(1, len(json.dumps(content)) // 4),
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


def message(body: dict[str, Any], content: list[dict[str, Any]], stop: str) -> dict[str, Any]:
    return {
        "id": f"msg_{len(json.dumps(body))}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage_for(body, content),
    }


class FakeClaude:
    def __init__(self, brain: Brain) -> None:
        self.brain = brain
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []
        self.arrivals: list[float] = []
        #: Picks a failure for a request (``None``: answer it); set and cleared by tests.
        self.outage: Callable[[dict[str, Any]], Failure | None] | None = None
        self._scripted: deque[Failure] = deque()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                found = self.path.rstrip("/") == "/v1/messages"
                with fake._lock:
                    fake.arrivals.append(time.monotonic())
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    failure = fake._failure(body) if found else None
                    fake.statuses.append(404 if not found else failure.status if failure else 200)
                if not found:
                    self.send_error(404)
                    return
                if failure is not None:
                    self._send(failure.status, failure.body(), failure.headers)
                    return
                content, stop = fake.brain(body)
                self._send(200, json.dumps(message(body, content, stop)).encode())

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll: shutdown() waits up to one poll interval.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def fail_next(self, *failures: Failure) -> None:
        """Answer the next requests with ``failures``, one each, before any ``outage``."""
        with self._lock:
            self._scripted.extend(failures)

    def answered(self) -> list[dict[str, Any]]:
        """The requests answered with a message (each one a call that was paid for)."""
        with self._lock:
            pairs = list(zip(self.requests, self.statuses, strict=True))
        return [body for body, status in pairs if status == 200]

    def _failure(self, body: dict[str, Any]) -> Failure | None:
        if self._scripted:
            return self._scripted.popleft()
        return self.outage(body) if self.outage is not None else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeClaude:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---- helpers for brains ---------------------------------------------------------------------


def tool_use(name: str, payload: dict[str, Any], n: int) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{name}_{n}", "name": name, "input": payload}


def text(words: str) -> dict[str, Any]:
    return {"type": "text", "text": words}


def tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool results of the last user message (empty if it was not one)."""
    last = body["messages"][-1]
    content = last["content"]
    if last["role"] != "user" or isinstance(content, str):
        return []
    return [block for block in content if block.get("type") == "tool_result"]


def result_of(body: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The latest result of tool ``name`` anywhere in the conversation."""
    uses: dict[str, str] = {}
    found = None
    for msg in body["messages"]:
        if isinstance(msg["content"], str):
            continue
        for block in msg["content"]:
            if block.get("type") == "tool_use":
                uses[block["id"]] = block["name"]
            elif block.get("type") == "tool_result" and uses.get(block["tool_use_id"]) == name:
                found = block
    return found


def assistant_turns(body: dict[str, Any]) -> int:
    return sum(1 for msg in body["messages"] if msg["role"] == "assistant")


def unified(path: str, old: str, new: str, *, n: int = 3) -> str:
    """A unified diff of ``path`` as ``git diff`` would name it, ``n`` lines of context."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
            n=n,
        )
    )


def config_patch(body: dict[str, Any], key: str, value: Any) -> str:
    """A diff setting ``key`` of harness.json, against the file as ``read_harness_file``
    last returned it (so a fake must have read it first)."""
    read = result_of(body, "read_harness_file")
    assert read is not None, "read harness.json before patching it"
    current = json.loads(read["content"])
    old = json.dumps(current, indent=2) + "\n"
    # The fake diffs exactly what it read through the tool.
    assert old == read["content"]
    return unified("harness.json", old, json.dumps({**current, key: value}, indent=2) + "\n")


def decide_edit(turn: int, why: str) -> list[dict[str, Any]]:
    """The ``decide`` call of a Feedback Agent that pulls the edit lever."""
    decision = {
        "lever": "edit",
        "rationale": why,
        "evidence": ["episodes read above"],
        "alternatives": [
            {"lever": "edit", "score": 0.8, "why": "answers are unparsable"},
            {"lever": "train", "score": 0.1, "why": "not allowed in mode h"},
        ],
        "expected_effect": "more parsable answers on val",
    }
    return [tool_use("decide", decision, turn)]
