from collections.abc import Iterator

import openai
import pytest

from sia.gateway import EpisodeTicket, Gateway
from tests.gateway.fakes import ScriptedBackend


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def gateway(backend: ScriptedBackend) -> Iterator[Gateway]:
    with Gateway(backend, max_batch=8, batch_wait_ms=20) as running:
        yield running


def ticket(episode_id: str = "ep-1", **overrides: object) -> EpisodeTicket:
    fields: dict[str, object] = {
        "run_id": "run-a",
        "iteration": 3,
        "episode_id": episode_id,
        "harness_commit": "c0ffee",
        "adapter_tag": None,
    }
    fields.update(overrides)
    return EpisodeTicket(**fields)  # type: ignore[arg-type]


def client_for(gateway: Gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=token, max_retries=0, timeout=30)
