"""Continuous batching: rows that join a running batch decode exactly as they would alone,
and every call the gateway records names the adapter whose weights produced it."""

import pytest

from sia.gateway import Gateway
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from tests.gateway.conftest import client_for, ticket
from tests.support.traffic import traffic_across_adapter_switches

ATOL = 1e-4


def _requests() -> list[GenRequest]:
    """Prompts of different lengths, greedy and seeded sampling."""
    requests = []
    for i in range(9):
        text = "count " * (1 + 3 * (i % 4)) + str(i)
        sampled = i % 3 == 0
        requests.append(
            GenRequest(
                messages=[{"role": "user", "content": text}],
                max_tokens=6 + 2 * (i % 5),
                temperature=0.8 if sampled else 0.0,
                seed=500 + i if sampled else None,
            )
        )
    return requests


def test_rows_joining_a_running_batch_decode_as_they_would_alone() -> None:
    # Packed decoding only: the padded loop starts new rows once its batch has drained.
    model, tokenizer = build_tiny(seed=0)
    tiny_policy = HFPolicy(model, tokenizer, packed=True)
    requests = _requests()
    alone = [tiny_policy.generate([request])[0] for request in requests]
    before = tiny_policy.decode_stats
    # Three start; the rest arrive two at a time on later admission calls, mid-decode.
    later = list(requests[3:])
    calls = {"admit": 0}

    def admit(room: int) -> list[GenRequest]:
        calls["admit"] += 1
        if calls["admit"] % 3 or not later:
            return []
        taken = later[: min(room, 2)]
        del later[: len(taken)]
        return taken

    results: dict[int, object] = {}
    tiny_policy.generate_continuous(
        requests[:3], admit, lambda index, result: results.__setitem__(index, result)
    )
    assert sorted(results) == list(range(len(requests)))
    after = tiny_policy.decode_stats
    # The check has teeth: rows were prefilled in several groups and merged mid-run.
    assert after["prefills"] - before["prefills"] >= 4
    for index, expected in enumerate(alone):
        got = results[index]
        assert got.completion_ids == expected.completion_ids, index
        assert got.prompt_ids == expected.prompt_ids
        assert got.logprobs == pytest.approx(expected.logprobs, abs=ATOL)


def test_alternating_adapters_under_traffic_are_attributed_to_the_right_weights(
    tiny_policy: HFPolicy, lora_dirs
) -> None:
    episodes, calls_each = 6, 4
    with Gateway(tiny_policy, max_batch=4, batch_wait_ms=2) as gateway:
        tokens = [gateway.register_episode(ticket(f"ep-{i}")) for i in range(episodes)]
        clients = [client_for(gateway, token) for token in tokens]
        rows = traffic_across_adapter_switches(
            gateway, clients, lora_dirs, calls_each=calls_each, max_tokens=8, switch_every_s=0.02
        )
    assert len(rows) == episodes * calls_each
    # Traffic really crossed switches: the calls ran under more than one set of weights.
    assert len({row.adapter_tag for row in rows}) >= 2
    for row in rows:
        tiny_policy.set_adapter(row.adapter_tag)
        again = tiny_policy.score(row.prompt_ids, row.completion_ids, temperature=0.0)
        assert again == pytest.approx(list(row.logprobs), abs=ATOL), row.adapter_tag
