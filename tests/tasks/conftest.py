from collections.abc import Callable
from types import ModuleType, SimpleNamespace

import pytest

from tasks.arith import ArithConfig, ArithTask


class FakeClient:
    """An OpenAI-compatible client double: replies from a script, records every call.

    After the script runs out the last reply repeats, so a test scripts only what matters.
    """

    def __init__(self, *replies: str | None) -> None:
        self.replies = list(replies) or [""]
        self.calls: list[dict] = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _create(self, *, model, messages, max_tokens, temperature):
        self.calls.append(
            {
                "model": model,
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
            }
        )
        text = self.replies[min(len(self.calls), len(self.replies)) - 1]
        message = SimpleNamespace(role="assistant", content=text)
        return SimpleNamespace(choices=[SimpleNamespace(index=0, message=message)])


def load_agent(files: dict[str, bytes]) -> ModuleType:
    """Execute a harness's agent.py from its bytes, as a fresh module."""
    module = ModuleType("harness_agent")
    exec(compile(files["agent.py"], "agent.py", "exec"), module.__dict__)
    return module


@pytest.fixture
def fake_client() -> type[FakeClient]:
    return FakeClient


@pytest.fixture
def agent_module() -> Callable[[dict[str, bytes]], ModuleType]:
    return load_agent


@pytest.fixture
def small_arith() -> ArithTask:
    return ArithTask(seed=3, config=ArithConfig(train=30, val=10, test=10))
