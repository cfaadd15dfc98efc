"""Running harness code in tests: a client double with scripted replies, and the loader."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

__all__ = ["FakeClient", "load_agent"]


class FakeClient:
    """Answers ``chat.completions.create`` and ``completions.create`` from a script.

    After the script runs out the last reply repeats, so a test scripts only what matters.
    Each call is recorded with its keyword arguments (``messages`` or ``prompt``, ...).
    """

    def __init__(self, *replies: str | None) -> None:
        self.replies = list(replies) or [""]
        self.calls: list[dict] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._chat))
        self.completions = SimpleNamespace(create=self._text)

    def _next(self, call: dict) -> str | None:
        self.calls.append(call)
        return self.replies[min(len(self.calls), len(self.replies)) - 1]

    def _chat(self, *, model, messages, max_tokens, temperature):
        text = self._next(
            {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
            }
        )
        message = SimpleNamespace(role="assistant", content=text)
        return SimpleNamespace(choices=[SimpleNamespace(index=0, message=message)])

    def _text(self, *, model, prompt, max_tokens, temperature, stop=None):
        call = {"model": model, "prompt": prompt, "max_tokens": max_tokens}
        text = self._next({**call, "temperature": temperature, "stop": stop})
        return SimpleNamespace(choices=[SimpleNamespace(index=0, text=text)])


def load_agent(files: dict[str, bytes]) -> ModuleType:
    """Execute a harness's agent.py from its bytes, as a fresh module."""
    module = ModuleType("harness_agent")
    exec(compile(files["agent.py"], "agent.py", "exec"), module.__dict__)
    return module
