"""A scripted policy backend: fixed token ids and logprobs, every batch counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from sia.models.generation import Generation, GenRequest, Usage

__all__ = ["ScriptedBackend"]


class ScriptedBackend:
    """Answers every request with ``reply`` (one token per character), slowly enough that
    concurrent requests meet in the batcher."""

    def __init__(self, reply: str = "42", delay_s: float = 0.05) -> None:
        self.reply = reply
        self.delay_s = delay_s
        self.batches: list[list[GenRequest]] = []
        self.adapter_calls: list[tuple[str, str | None]] = []
        self.active: str | None = None
        self.adapters: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        with self._lock:
            self.batches.append(list(requests))
        time.sleep(self.delay_s)
        if any(r.messages and "boom" in r.messages[-1]["content"] for r in requests):
            raise ValueError("boom in batch")
        return [self._one(request) for request in requests]

    def _one(self, request: GenRequest) -> Generation:
        text = self.reply[: request.max_tokens]
        prompt = request.prompt or "".join(m["content"] for m in request.messages or [])
        prompt_ids = [ord(c) % 256 for c in prompt] or [0]
        completion_ids = [ord(c) for c in text]
        logprobs = [-0.5 - i for i in range(len(completion_ids))]
        finish = "stop" if len(text) == len(self.reply) else "length"
        usage = Usage(len(prompt_ids), len(completion_ids), len(prompt_ids) + len(completion_ids))
        return Generation(
            text, prompt_ids, completion_ids, logprobs, finish, usage, request.seed, self.active
        )

    def load_adapter(self, name: str, path: str | Path) -> None:
        self.adapter_calls.append(("load", name))
        self.adapters = (*self.adapters, name)

    def set_adapter(self, name: str | None) -> None:
        self.adapter_calls.append(("set", name))
        self.active = name
