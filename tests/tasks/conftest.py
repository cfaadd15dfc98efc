from collections.abc import Callable
from types import ModuleType

import pytest

from tasks.arith import ArithConfig, ArithTask
from tests.support.clients import FakeClient, load_agent


@pytest.fixture
def fake_client() -> type[FakeClient]:
    return FakeClient


@pytest.fixture
def agent_module() -> Callable[[dict[str, bytes]], ModuleType]:
    return load_agent


@pytest.fixture
def small_arith() -> ArithTask:
    return ArithTask(seed=3, config=ArithConfig(train=30, val=10, test=10))
