"""Continuous batching: rows that join a running batch decode exactly as they would alone,
and every call the gateway records names the adapter whose weights produced it."""

import threading

import pytest

from sia.gateway import Gateway
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from tests.gateway.conftest import client_for, ticket

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
        stop = threading.Event()

        def traffic(index: int) -> None:
            for call in range(calls_each):
                clients[index].chat.completions.create(
                    model="policy",
                    messages=[{"role": "user", "content": f"episode {index} call {call}"}],
                    max_tokens=8,
                    temperature=0,
                )

        def switcher() -> None:
            order = [("alpha", lora_dirs["alpha"]), ("beta", lora_dirs["beta"]), (None, None)]
            turn = 0
            while not stop.is_set():
                gateway.use_adapter(*order[turn % 3])
                turn += 1
                stop.wait(0.02)

        swapping = threading.Thread(target=switcher)
        swapping.start()
        workers = [threading.Thread(target=traffic, args=(i,)) for i in range(episodes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        swapping.join()
        rows = gateway.drain_calls()
    assert len(rows) == episodes * calls_each
    # Traffic really crossed switches: the calls ran under more than one set of weights.
    assert len({row.adapter_tag for row in rows}) >= 2
    for row in rows:
        tiny_policy.set_adapter(row.adapter_tag)
        again = tiny_policy.score(row.prompt_ids, row.completion_ids, temperature=0.0)
        assert again == pytest.approx(list(row.logprobs), abs=ATOL), row.adapter_tag
