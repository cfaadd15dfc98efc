import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from sia.gateway import EPISODE_HEADER, Gateway, GatewayError
from tests.gateway.conftest import client_for, ticket
from tests.gateway.fakes import ScriptedBackend

USER = [{"role": "user", "content": "What is 40 + 2?"}]


def test_chat_completion_speaks_openai(gateway: Gateway) -> None:
    client = client_for(gateway, gateway.register_episode(ticket()))

    response = client.chat.completions.create(
        model="policy", messages=USER, max_tokens=8, temperature=0, logprobs=True
    )

    choice = response.choices[0]
    assert choice.message.content == "42"
    assert choice.finish_reason == "stop"
    assert response.usage.completion_tokens == 2
    assert response.usage.total_tokens == response.usage.prompt_tokens + 2
    assert [entry.logprob for entry in choice.logprobs.content] == [-0.5, -1.5]


def test_logprobs_only_when_asked(gateway: Gateway) -> None:
    client = client_for(gateway, gateway.register_episode(ticket()))

    response = client.chat.completions.create(model="policy", messages=USER, max_tokens=8)

    assert response.choices[0].logprobs is None


def test_text_completion(gateway: Gateway) -> None:
    client = client_for(gateway, gateway.register_episode(ticket()))

    response = client.completions.create(model="policy", prompt="40+2=", max_tokens=1, logprobs=0)

    choice = response.choices[0]
    assert choice.text == "4"
    assert choice.finish_reason == "length"
    assert choice.logprobs.token_logprobs == [-0.5]
    [row] = gateway.drain_calls()
    assert json.loads(row.messages_json) == "40+2="


def test_concurrent_requests_share_a_backend_call(
    gateway: Gateway, backend: ScriptedBackend
) -> None:
    clients = [client_for(gateway, gateway.register_episode(ticket(f"ep-{i}"))) for i in range(8)]
    # Warm the HTTP stack so connection setup does not spread the burst out.
    clients[0].models.list()
    barrier = threading.Barrier(len(clients))
    replies: list[str] = []

    def call(client: openai.OpenAI) -> None:
        barrier.wait()
        response = client.chat.completions.create(model="policy", messages=USER, max_tokens=4)
        replies.append(response.choices[0].message.content or "")

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert replies == ["42"] * 8
    assert len(backend.batches) < 8
    assert max(len(batch) for batch in backend.batches) > 1
    assert gateway.batch_sizes == [len(batch) for batch in backend.batches]


def _staggered(gateway: Gateway, clients: list[openai.OpenAI], gap_s: float) -> None:
    """The clients call one after another, ``gap_s`` apart, each in its own thread."""

    def call(client: openai.OpenAI) -> None:
        client.chat.completions.create(model="policy", messages=USER, max_tokens=2)

    threads = [threading.Thread(target=call, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
        time.sleep(gap_s)
    for thread in threads:
        thread.join()


def test_a_batch_waits_for_registered_episodes_that_have_not_called_yet() -> None:
    backend = ScriptedBackend(delay_s=0.0)
    with Gateway(backend, max_batch=8, batch_wait_ms=5, max_batch_wait_ms=2000) as gateway:
        clients = [
            client_for(gateway, gateway.register_episode(ticket(f"ep-{i}"))) for i in range(4)
        ]
        clients[0].models.list()
        # 40 ms apart: far beyond the 5 ms wait, within the 2 s one for expected callers.
        _staggered(gateway, clients, 0.04)
        assert gateway.batch_sizes == [4]


def test_episodes_that_never_call_hold_a_batch_back_only_up_to_the_cap() -> None:
    backend = ScriptedBackend(delay_s=0.0)
    with Gateway(backend, max_batch=8, batch_wait_ms=5, max_batch_wait_ms=100) as gateway:
        caller = client_for(gateway, gateway.register_episode(ticket("ep-0")))
        for i in range(5):
            gateway.register_episode(ticket(f"silent-{i}"))
        _staggered(gateway, [caller, caller], 0.3)
        assert gateway.batch_sizes == [1, 1]


def test_every_call_is_recorded_with_its_episode(gateway: Gateway) -> None:
    first = client_for(gateway, gateway.register_episode(ticket("ep-1", adapter_tag="t1")))
    second = client_for(gateway, gateway.register_episode(ticket("ep-2", adapter_tag="t1")))

    gateway.use_adapter("t1", Path("adapters/t1"))
    for _ in range(3):
        first.chat.completions.create(model="policy", messages=USER, max_tokens=8)
    gateway.use_adapter(None)
    second.chat.completions.create(model="policy", messages=USER, max_tokens=1)
    rows = gateway.drain_calls()

    assert [(r.episode_id, r.call_index) for r in rows] == [
        ("ep-1", 0),
        ("ep-1", 1),
        ("ep-1", 2),
        ("ep-2", 0),
    ]
    row = rows[0]
    assert (row.run_id, row.iteration, row.harness_commit, row.adapter_tag) == (
        "run-a",
        3,
        "c0ffee",
        "t1",
    )
    assert json.loads(row.messages_json) == USER
    assert row.completion_ids == [ord("4"), ord("2")]
    assert row.logprobs == [-0.5, -1.5]
    assert row.prompt_ids and row.finish_reason == "stop" and row.latency_ms > 0
    assert rows[3].finish_reason == "length"
    # The tag is the one the tokens came from, not the one the episode was started with.
    assert rows[3].adapter_tag is None
    assert gateway.drain_calls() == []


def test_call_budget_is_enforced(gateway: Gateway) -> None:
    client = client_for(gateway, gateway.register_episode(ticket(max_calls=2)))
    for _ in range(2):
        client.chat.completions.create(model="policy", messages=USER, max_tokens=8)

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="policy", messages=USER, max_tokens=8)

    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "call_budget_exceeded"
    assert len(gateway.drain_calls()) == 2


def test_token_budget_caps_and_then_refuses(gateway: Gateway, backend: ScriptedBackend) -> None:
    backend.reply = "123456"
    token = gateway.register_episode(ticket(max_tokens=10))
    client = client_for(gateway, token)

    full = client.chat.completions.create(model="policy", messages=USER, max_tokens=6)
    capped = client.chat.completions.create(model="policy", messages=USER, max_tokens=6)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="policy", messages=USER, max_tokens=6)

    assert full.usage.completion_tokens == 6
    assert capped.usage.completion_tokens == 4
    assert backend.batches[-1][0].max_tokens == 4
    assert refused.value.body["code"] == "token_budget_exceeded"
    assert gateway.episode_usage(token) == (2, 10)


def test_unknown_and_released_tokens_are_refused(gateway: Gateway) -> None:
    token = gateway.register_episode(ticket())
    gateway.release_episode(token)

    for key in (token, "sia-made-up"):
        with pytest.raises(openai.AuthenticationError):
            client_for(gateway, key).chat.completions.create(model="policy", messages=USER)
    assert gateway.drain_calls() == []


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": USER, "stream": True},
        {"messages": USER, "n": 2},
        {"messages": USER, "temperature": -1},
        {"messages": USER, "max_tokens": 0},
        {"messages": [{"content": "no role"}]},
    ],
)
def test_bad_requests_are_400_and_cost_nothing(gateway: Gateway, body: dict) -> None:
    token = gateway.register_episode(ticket(max_calls=1))

    status, payload = _post(gateway, "/chat/completions", body, {EPISODE_HEADER: token})

    assert status == 400
    assert payload["error"]["message"]
    assert gateway.episode_usage(token) == (0, 0)


def test_episode_header_authenticates(gateway: Gateway) -> None:
    token = gateway.register_episode(ticket())

    status, payload = _post(
        gateway, "/chat/completions", {"messages": USER, "max_tokens": 4}, {EPISODE_HEADER: token}
    )

    assert status == 200
    assert payload["choices"][0]["message"]["content"] == "42"


def test_a_failing_request_does_not_fail_its_batch(
    gateway: Gateway, backend: ScriptedBackend
) -> None:
    clients = [client_for(gateway, gateway.register_episode(ticket(f"ep-{i}"))) for i in range(4)]
    clients[0].models.list()
    barrier = threading.Barrier(4)
    outcomes: dict[int, object] = {}

    def call(index: int) -> None:
        content = "boom" if index == 0 else "fine"
        barrier.wait()
        try:
            response = clients[index].chat.completions.create(
                model="policy", messages=[{"role": "user", "content": content}], max_tokens=4
            )
            outcomes[index] = response.choices[0].message.content
        except openai.InternalServerError as error:
            outcomes[index] = error.status_code

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == {0: 500, 1: "42", 2: "42", 3: "42"}
    assert {row.episode_id for row in gateway.drain_calls()} == {"ep-1", "ep-2", "ep-3"}


def test_adapter_is_loaded_once_and_switched_between_batches(
    gateway: Gateway, backend: ScriptedBackend, tmp_path
) -> None:
    gateway.use_adapter("iter-1", tmp_path)
    gateway.use_adapter(None)
    gateway.use_adapter("iter-1", tmp_path)

    assert backend.adapter_calls == [
        ("load", "iter-1"),
        ("set", "iter-1"),
        ("set", None),
        ("set", "iter-1"),
    ]
    with pytest.raises(GatewayError):
        gateway.use_adapter("never-loaded")


def test_sampling_seed_derives_from_the_episode(gateway: Gateway, backend: ScriptedBackend) -> None:
    client = client_for(gateway, gateway.register_episode(ticket(seed=7)))
    client.chat.completions.create(model="policy", messages=USER, max_tokens=2)
    client.chat.completions.create(model="policy", messages=USER, max_tokens=2)
    client.chat.completions.create(model="policy", messages=USER, max_tokens=2, seed=5)

    seeds = [batch[0].seed for batch in backend.batches]
    assert seeds[0] is not None and seeds[1] is not None and seeds[0] != seeds[1]
    assert seeds[2] == 5


def test_lifecycle() -> None:
    gateway = Gateway(ScriptedBackend())
    with pytest.raises(GatewayError):
        _ = gateway.base_url
    url = gateway.start()
    assert gateway.start() == url
    assert url.startswith("http://127.0.0.1:")
    gateway.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/models", timeout=2)
    with pytest.raises(GatewayError):
        gateway.register_episode(ticket(max_calls=0))


def _post(gateway: Gateway, path: str, body: dict, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(
        gateway.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_ticket_temperature_replaces_the_calls_and_is_recorded(
    gateway: Gateway, backend: ScriptedBackend
) -> None:
    explore = client_for(gateway, gateway.register_episode(ticket("ep-x", temperature=1.0)))
    plain = client_for(gateway, gateway.register_episode(ticket("ep-p")))
    for client in (explore, plain):
        client.chat.completions.create(
            model="policy",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            temperature=0,
            top_p=0.9,
        )
    sent = [request.temperature for batch in backend.batches for request in batch]
    rows = {row.episode_id: row for row in gateway.drain_calls()}
    assert sorted(sent) == [0.0, 1.0]
    assert (rows["ep-x"].temperature, rows["ep-x"].top_p) == (1.0, 0.9)
    assert (rows["ep-p"].temperature, rows["ep-p"].top_p) == (0.0, 0.9)
