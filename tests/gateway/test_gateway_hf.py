"""The gateway in front of the real transformers backend with the tiny model."""

import threading

import openai
import pytest

from sia.gateway import Gateway
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from tests.gateway.conftest import client_for, ticket


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    model, tokenizer = build_tiny(seed=0)
    return HFPolicy(model, tokenizer)


def test_tiny_model_calls_are_batched_and_recorded(policy: HFPolicy) -> None:
    with Gateway(policy, max_batch=8, batch_wait_ms=20) as gateway:
        clients = [
            client_for(gateway, gateway.register_episode(ticket(f"ep-{i}"))) for i in range(6)
        ]
        clients[0].models.list()
        barrier = threading.Barrier(6)
        responses = {}

        def call(index: int) -> None:
            barrier.wait()
            responses[index] = clients[index].chat.completions.create(
                model="policy",
                messages=[{"role": "user", "content": f"What is {index} + 1?"}],
                max_tokens=6,
                temperature=0,
                logprobs=True,
            )

        threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        rows = {row.episode_id: row for row in gateway.drain_calls()}

        assert max(gateway.batch_sizes) > 1
        assert len(rows) == 6
        for index, response in responses.items():
            row = rows[f"ep-{index}"]
            content = response.choices[0].logprobs.content
            assert len(row.completion_ids) == len(row.logprobs) == len(content)
            assert response.usage.completion_tokens == len(row.completion_ids)
            assert response.usage.prompt_tokens == len(row.prompt_ids)
            assert [c.logprob for c in content] == pytest.approx(row.logprobs)
            assert all(lp <= 0 for lp in row.logprobs)


def test_a_prompt_longer_than_the_context_is_a_400_that_costs_nothing(policy: HFPolicy) -> None:
    with Gateway(policy, max_batch=2) as gateway:
        client = client_for(gateway, gateway.register_episode(ticket("long")))
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="policy", messages=[{"role": "user", "content": "x" * 4000}], max_tokens=4
            )
        assert caught.value.status_code == 400
        assert "leaves no room in the model's" in str(caught.value)
        assert gateway.drain_calls() == []
