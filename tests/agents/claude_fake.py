"""A loopback stand-in for the Anthropic Messages API, for tests only.

``FakeClaude`` serves ``POST /v1/messages`` on 127.0.0.1 and answers each request with
whatever its ``brain(request_body)`` returns (content blocks and a stop reason), wrapped in
the API's message shape with deterministic usage numbers. It keeps every request it
received (headers and body), so tests can check what reached "Claude": the prompts, the
tools, the API key header.
"""

from __future__ import annotations

import difflib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Brain = Callable[[dict[str, Any]], tuple[list[dict[str, Any]], str]]


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
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path.rstrip("/") != "/v1/messages":
                    self.send_error(404)
                    return
                content, stop = fake.brain(body)
                data = json.dumps(message(body, content, stop)).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

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
