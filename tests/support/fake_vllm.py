"""A loopback stand-in for vLLM's OpenAI-compatible server, for tests without a GPU.

It answers the routes SIA uses with bodies shaped like vLLM's (``token_id:N`` token strings
and ``token_ids`` when asked, ``prompt_token_ids``, logprobs, usage, vLLM's error bodies)
and keeps runtime LoRA state: ``/v1/load_lora_adapter`` wants a directory holding an
``adapter_config.json``, and a request naming an adapter not loaded is a 404.

A completion says which model answered: its text is ``"<model>|<n>"`` (``n`` counts the
server's completions) and its token ids are that text's bytes, so a test can tell from a
recorded call alone which weights produced it.

Only the standard library is used: run as a script (``fake_vllm.py serve MODEL --port P
...``) it plays ``vllm serve`` for the subprocess path, recording its command line and
environment to ``$FAKE_VLLM_RECORD``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeVLLM", "main"]


class FakeVLLM:
    """A fake vLLM server on ``127.0.0.1``; ``base_url`` ends in ``/v1``.

    ``fail`` maps a path to HTTP statuses the next calls to it answer with (consumed in
    order); ``delay_s`` slows every completion so concurrent requests overlap.
    """

    def __init__(
        self,
        base_model: str = "base",
        *,
        port: int = 0,
        delay_s: float = 0.0,
        runtime_lora: bool = True,
    ) -> None:
        self.base_model = base_model
        self.delay_s = delay_s
        self.runtime_lora = runtime_lora
        self.loaded: dict[str, str] = {}
        self.log: list[tuple[str, str, Any]] = []
        self.fail: dict[str, list[int]] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeVLLM:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeVLLM:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def calls(self, path: str) -> list[Any]:
        """Bodies of the calls to ``path`` so far, in order."""
        with self._lock:
            return [body for _, p, body in self.log if p == path]

    # ---- answers ------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.log.append((method, path, body))
            scripted = self.fail.get(path)
            if scripted:
                return scripted.pop(0), _error("scripted failure", "InternalServerError", 500)
        if method == "GET" and path == "/health":
            return 200, ""
        if method == "GET" and path == "/v1/models":
            return 200, self._models()
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            return self._complete(body, chat=path.endswith("chat/completions"))
        if method == "POST" and path.endswith("_lora_adapter") and self.runtime_lora:
            return self._lora(path.removeprefix("/v1/").split("_")[0], body)
        return 404, _error("Not Found", "NotFoundError", 404)

    def _models(self) -> dict[str, Any]:
        def entry(name: str, root: str, parent: str | None) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": 1700000000,
                "owned_by": "vllm",
                "root": root,
                "parent": parent,
                "max_model_len": 2048,
                "permission": [],
            }

        with self._lock:
            adapters = [entry(n, p, self.base_model) for n, p in self.loaded.items()]
        return {"object": "list", "data": [entry(self.base_model, "/models/base", None), *adapters]}

    def _lora(self, verb: str, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("lora_name")
        with self._lock:
            if verb == "load":
                path = str(body.get("lora_path"))
                if name in self.loaded:
                    message = f"The lora adapter '{name}' has already been loaded."
                    return 400, _error(message, "InvalidUserInput", 400)
                if not (Path(path) / "adapter_config.json").is_file():
                    message = f"Loading lora {name} failed: No adapter found for {path}"
                    return 400, _error(message, "BadRequestError", 400)
                self.loaded[name] = path
                return 200, f"Success: LoRA adapter '{name}' added successfully."
            if name not in self.loaded:
                return 404, _error(f"The lora adapter '{name}' cannot be found.", "NotFound", 404)
            del self.loaded[name]
            return 200, f"Success: LoRA adapter '{name}' removed successfully."

    def _complete(self, body: dict[str, Any], *, chat: bool) -> tuple[int, Any]:
        model = body.get("model")
        with self._lock:
            known = model == self.base_model or model in self.loaded
            self._count += 1
            count = self._count
        if not known:
            return 404, _error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        time.sleep(self.delay_s)
        if chat:
            prompt = "".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = str(body["prompt"])
        full = f"{model}|{count}"
        text = full[: int(body.get("max_tokens", 16))]
        finish = "stop" if text == full else "length"
        ids = list(text.encode())
        prompt_ids = [b for b in prompt.encode()][:64] or [0]
        logprobs = [-0.01 * (i + 1) for i in range(len(ids))]
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        tokens = [f"token_id:{i}" if as_ids else chr(i) for i in ids]
        with_ids = bool(body.get("return_token_ids"))
        usage = {
            "prompt_tokens": len(prompt_ids),
            "total_tokens": len(prompt_ids) + len(ids),
            "completion_tokens": len(ids),
            "prompt_tokens_details": None,
        }
        want_logprobs = bool(body.get("logprobs")) or body.get("logprobs") == 0
        if chat:
            content = [
                {"token": t, "logprob": lp, "bytes": [i], "top_logprobs": []}
                for t, lp, i in zip(tokens, logprobs, ids, strict=True)
            ]
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": {"content": content} if want_logprobs else None,
                "finish_reason": finish,
                "stop_reason": None,
                "token_ids": ids if with_ids else None,
            }
            return 200, {
                "id": f"chatcmpl-{count}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
                "prompt_logprobs": None,
                "prompt_token_ids": prompt_ids if with_ids else None,
                "kv_transfer_params": None,
            }
        choice = {
            "index": 0,
            "text": text,
            "logprobs": {
                "text_offset": list(range(len(ids))),
                "token_logprobs": logprobs,
                "tokens": tokens,
                "top_logprobs": [{t: lp} for t, lp in zip(tokens, logprobs, strict=True)],
            }
            if want_logprobs
            else None,
            "finish_reason": finish,
            "stop_reason": None,
            "prompt_logprobs": None,
            "prompt_token_ids": prompt_ids if with_ids else None,
            "token_ids": ids if with_ids else None,
        }
        return 200, {
            "id": f"cmpl-{count}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(fake: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._reply(*fake.answer("GET", self.path, None))

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._reply(400, _error("the body is not JSON", "BadRequestError", 400))
                return
            self._reply(*fake.answer("POST", self.path, body))

        def _reply(self, status: int, body: Any) -> None:
            # vLLM answers adapter changes with plain text and everything else with JSON.
            text = isinstance(body, str)
            data = (body if text else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("content-type", "text/plain" if text else "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str]) -> int:
    """``serve MODEL [--host H] [--port P] [...]``: what ``vllm serve`` would do, faked."""
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default=None)
    args, _ = parser.parse_known_args(argv)
    record = os.environ.get("FAKE_VLLM_RECORD")
    if record:
        env = {k: v for k, v in os.environ.items() if k.startswith("VLLM_")}
        Path(record).write_text(json.dumps({"argv": argv, "env": env, "pid": os.getpid()}))
    if os.environ.get("FAKE_VLLM_FAIL"):
        print("INFO starting engine", flush=True)
        print("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        return 1
    time.sleep(float(os.environ.get("FAKE_VLLM_STARTUP_S", "0")))
    fake = FakeVLLM(
        args.served_model_name or args.model,
        port=args.port,
        runtime_lora=os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING") == "True",
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with fake:
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
