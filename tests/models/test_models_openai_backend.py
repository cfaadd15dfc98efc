"""The openai backend: against our own gateway around the tiny model, and mocked failures."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import torch

from ledger import DuckDBRecorder
from sia.gateway import EPISODE_HEADER, EpisodeTicket, Gateway
from sia.models.errors import AdapterError, AdaptersUnsupported, GenerationError
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.openai_backend import OpenAIBackendConfig, OpenAIPolicy
from sia.models.tiny import build_tiny
from statemachine.errors import ConfigError, SiaError

KEY_ENV = "SIA_TEST_OPENAI_BACKEND_KEY"


def ascii_tiny_policy() -> HFPolicy:
    """The seed-0 tiny model, made to speak printable-ish ASCII and to stop now and then.

    Lone bytes >= 128 decode to U+FFFD, which no tokenizer can map back to the byte, so an
    untrained model's output would defeat the id round trip this file tests. Zeroed output
    rows give those tokens logit 0, below the best of ~128 random ones; a boosted EOS row
    makes some completions end on EOS instead of the length limit.
    """
    model, tokenizer = build_tiny(seed=0)
    with torch.no_grad():
        rows = model.lm_head.weight
        rows[128:256] = 0
        rows[[tokenizer.pad_token_id, tokenizer.bos_token_id]] = 0
        rows[tokenizer.eos_token_id] *= 2.5
    return HFPolicy(model, tokenizer)


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[HFPolicy, Gateway, str]]:
    policy = ascii_tiny_policy()
    ticket = EpisodeTicket("run-o", 0, "ep-o", "c0ffee", None, max_calls=1000, max_tokens=10**6)
    with Gateway(policy, max_batch=8, batch_wait_ms=50) as gateway:
        yield policy, gateway, gateway.register_episode(ticket)


REQUESTS = [
    GenRequest(
        messages=[{"role": "user", "content": "What is 2 + 3?"}], max_tokens=12, temperature=0
    ),
    GenRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=12, temperature=0),
    GenRequest(messages=[{"role": "user", "content": "1+1="}], max_tokens=12, temperature=0),
    GenRequest(
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        max_tokens=12,
        temperature=0,
        stop=["2"],
    ),
    GenRequest(prompt="The answer is", max_tokens=12, temperature=0),
    GenRequest(prompt="x=", max_tokens=12, temperature=0),
    GenRequest(prompt="hello", max_tokens=10, temperature=0.5, top_p=0.5, seed=1234),
    GenRequest(
        messages=[{"role": "user", "content": "go"}],
        max_tokens=10,
        temperature=0.7,
        top_p=0.3,
        seed=7,
    ),
]


def test_through_a_real_gateway_matches_the_in_process_model(
    upstream: tuple[HFPolicy, Gateway, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy, gateway, token = upstream
    monkeypatch.setenv(KEY_ENV, token)  # the gateway's episode token is the API key
    config = OpenAIBackendConfig(
        base_url=gateway.base_url, model="policy", api_key_env=KEY_ENV, token_ids="tokenizer"
    )
    gateway.drain_calls()
    with OpenAIPolicy(config, tokenizer=policy.tokenizer) as remote:
        got = remote.generate(REQUESTS)
    want = policy.generate(REQUESTS)

    finishes = {w.finish_reason for w in want}
    assert finishes == {"stop", "length"}  # both endings are exercised
    assert max(gateway.batch_sizes) > 1  # concurrent calls met in the gateway's batcher
    assert len(gateway.drain_calls()) == len(REQUESTS)
    for g, w in zip(got, want, strict=True):
        assert g.text == w.text
        assert g.finish_reason == w.finish_reason
        assert g.prompt_ids == w.prompt_ids
        assert g.completion_ids == w.completion_ids
        assert g.logprobs == pytest.approx(w.logprobs, abs=1e-5)
        assert g.usage == w.usage
        assert g.seed == w.seed and g.adapter is None


def test_without_ids_the_gateway_still_records_and_the_ledger_stores_the_call(
    upstream: tuple[HFPolicy, Gateway, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    policy, gateway, token = upstream
    monkeypatch.delenv("SIA_TEST_UNSET_KEY", raising=False)
    config = OpenAIBackendConfig(
        base_url=gateway.base_url,
        model="policy",
        api_key_env="SIA_TEST_UNSET_KEY",
        headers={EPISODE_HEADER: token},
    )
    assert token not in repr(config)
    with OpenAIPolicy(config) as remote:
        [got] = remote.generate(REQUESTS[:1])
        # A second gateway in front of the openai backend: what a harness would see.
        with Gateway(remote) as front:
            ticket = EpisodeTicket("run-f", 1, "ep-f", "c0ffee", None)
            front_token = front.register_episode(ticket)
            response = httpx2.post(
                f"{front.base_url}/chat/completions",
                headers={"Authorization": f"Bearer {front_token}"},
                json={
                    "messages": REQUESTS[0].messages,
                    "max_tokens": 12,
                    "temperature": 0,
                    "logprobs": True,
                },
                timeout=30,
            )
            [row] = front.drain_calls()
    [want] = policy.generate(REQUESTS[:1])
    assert got.text == want.text
    assert got.prompt_ids == got.completion_ids == got.logprobs == []
    assert got.usage == want.usage
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == want.text
    assert row.completion_ids == row.logprobs == row.prompt_ids == []
    with DuckDBRecorder(tmp_path / "ledger.duckdb") as ledger:
        ledger.append_calls([row])
        [stored] = ledger.read_calls("run-f")
    assert stored.completion_ids == stored.logprobs == [] and stored.episode_id == "ep-f"


# ---- mocked endpoints ---------------------------------------------------------------------

Handler = Callable[[httpx2.Request], httpx2.Response]


def mocked(handler: Handler, **overrides: Any) -> OpenAIPolicy:
    fields: dict[str, Any] = {
        "base_url": "http://upstream.test/v1",
        "model": "m",
        "api_key_env": KEY_ENV,
        "max_retries": 2,
        "backoff_s": 0.0,
    }
    tokenizer = overrides.pop("tokenizer", None)
    fields.update(overrides)
    client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return OpenAIPolicy(OpenAIBackendConfig(**fields), tokenizer=tokenizer, http_client=client)


def chat_body(text: str = "ok", finish: str = "stop", **extra: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                **extra,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


class Script:
    """Answers calls with scripted responses in turn and keeps every request it saw."""

    def __init__(self, *responses: httpx2.Response | Exception) -> None:
        self.responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


CHAT = GenRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0)


def test_request_bodies_carry_the_sampling_parameters() -> None:
    text_body = {"choices": [{"text": "x", "finish_reason": "length"}]}
    script = Script(httpx2.Response(200, json=chat_body()))
    texts = Script(httpx2.Response(200, json=text_body))
    sampled = GenRequest(
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=9,
        temperature=0.7,
        top_p=0.5,
        seed=3,
        stop=["\n"],
    )
    with mocked(script, token_ids="vllm") as policy:
        policy.generate([sampled])
    with mocked(texts) as policy:
        [text] = policy.generate([GenRequest(prompt="p", max_tokens=2)])

    [body] = script.bodies()
    assert str(script.requests[0].url) == "http://upstream.test/v1/chat/completions"
    assert body == {
        "model": "m",
        "messages": sampled.messages,
        "max_tokens": 9,
        "temperature": 0.7,
        "top_p": 0.5,
        "seed": 3,
        "stop": ["\n"],
        "logprobs": True,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }
    [text_request] = texts.bodies()
    assert str(texts.requests[0].url) == "http://upstream.test/v1/completions"
    assert text_request["prompt"] == "p" and "logprobs" not in text_request  # mode "none"
    assert text.finish_reason == "length" and text.usage.total_tokens == 0


def test_vllm_token_ids_are_read_from_token_strings_or_token_ids() -> None:
    logprobs = {
        "content": [
            {"token": "token_id:17", "logprob": -0.5},
            {"token": "token_id:2", "logprob": -1.25},
        ]
    }
    by_strings = Script(
        httpx2.Response(200, json={**chat_body(logprobs=logprobs), "prompt_token_ids": [1, 2, 3]})
    )
    text_body = {
        "choices": [
            {
                "text": "ab",
                "finish_reason": "stop",
                "prompt_token_ids": [9],
                "token_ids": [4, 5],
                "logprobs": {
                    "tokens": ["token_id:4", "token_id:5"],
                    "token_logprobs": [-0.1, -0.2],
                },
            }
        ]
    }
    by_ids = Script(httpx2.Response(200, json=text_body))
    with mocked(by_strings, token_ids="vllm") as policy:
        [chat] = policy.generate([CHAT])
    with mocked(by_ids, token_ids="vllm") as policy:
        [text] = policy.generate([GenRequest(prompt="p")])
    assert (chat.prompt_ids, chat.completion_ids, chat.logprobs) == (
        [1, 2, 3],
        [17, 2],
        [-0.5, -1.25],
    )
    assert (text.prompt_ids, text.completion_ids, text.logprobs) == ([9], [4, 5], [-0.1, -0.2])
    assert text.usage.prompt_tokens == 1 and text.usage.completion_tokens == 2


def test_other_finish_reasons_read_as_stop_and_none_mode_has_no_ids() -> None:
    script = Script(httpx2.Response(200, json=chat_body("hey", finish="content_filter")))
    with mocked(script) as policy:
        [generation] = policy.generate([CHAT])
    assert generation.text == "hey" and generation.finish_reason == "stop"
    assert generation.prompt_ids == generation.completion_ids == generation.logprobs == []
    assert generation.usage.total_tokens == 7


def test_429_and_5xx_are_retried_until_success(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("sia.models.openai_backend.time.sleep", slept.append)
    script = Script(
        httpx2.Response(
            429, json={"error": {"message": "slow down"}}, headers={"retry-after": "2"}
        ),
        httpx2.Response(503, text="busy"),
        httpx2.Response(200, json=chat_body("fine")),
    )
    with mocked(script, backoff_s=0.25) as policy:
        [generation] = policy.generate([CHAT])
    assert generation.text == "fine"
    assert len(script.requests) == 3
    assert slept[0] == 2.0  # the server's Retry-After wins over our backoff
    assert 0.25 * 2 * 0.75 <= slept[1] <= 0.25 * 2 * 1.25


@pytest.mark.parametrize(
    ("answer", "expected", "calls"),
    [
        (
            httpx2.Response(500, json={"error": {"message": "kaput"}}),
            "HTTP 500: kaput .after 3 tries",
            3,
        ),
        (httpx2.ConnectError("refused"), "cannot reach", 3),
        (httpx2.Response(400, json={"error": {"message": "bad model"}}), "HTTP 400: bad model", 1),
        (httpx2.ReadTimeout("slow"), "no answer within", 1),
        (httpx2.Response(200, text="<html>not json"), "the body is not JSON", 1),
        (httpx2.Response(200, json={"choices": []}), "malformed response", 1),
        (httpx2.Response(200, json={"choices": [{"message": {"content": 3}}]}), "malformed", 1),
    ],
)
def test_failures_become_one_line_generation_errors(
    answer: httpx2.Response | Exception, expected: str, calls: int
) -> None:
    script = Script(answer)
    with mocked(script) as policy, pytest.raises(GenerationError, match=expected) as caught:
        policy.generate([CHAT, CHAT])
    assert "\n" not in str(caught.value)
    assert len(script.requests) == 2 * calls


def test_vllm_mode_refuses_plain_token_strings() -> None:
    logprobs = {"content": [{"token": "hello", "logprob": -0.5}]}
    with (
        mocked(
            Script(httpx2.Response(200, json=chat_body(logprobs=logprobs))), token_ids="vllm"
        ) as p,
        pytest.raises(GenerationError, match="token_id:N"),
    ):
        p.generate([CHAT])


def test_the_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    canary = "sk-canary-7f3a9e1b5d"
    monkeypatch.setenv(KEY_ENV, canary)
    echo = {"error": {"message": f"Incorrect API key provided: {canary}."}}
    for status in (401, 500):
        script = Script(httpx2.Response(status, json=echo))
        with mocked(script, max_retries=1) as policy:
            with pytest.raises(GenerationError) as caught:
                policy.generate([CHAT])
            assert canary not in repr(vars(policy)) and canary not in repr(policy.config)
        assert script.requests[0].headers["authorization"] == f"Bearer {canary}"
        assert canary not in str(caught.value) and "[redacted]" in str(caught.value)


def test_no_key_means_no_authorization_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    script = Script(httpx2.Response(200, json=chat_body()))
    with mocked(script, headers={"X-Extra": "1"}) as policy:
        policy.generate([CHAT])
    assert "authorization" not in script.requests[0].headers
    assert script.requests[0].headers["x-extra"] == "1"


def test_adapters_are_refused_and_the_base_model_is_a_no_op() -> None:
    with mocked(Script(httpx2.Response(200, json=chat_body()))) as policy:
        policy.set_adapter(None)
        for attempt in (
            lambda: policy.load_adapter("a", "/tmp/a"),
            lambda: policy.set_adapter("a"),
            lambda: policy.unload_adapter("a"),
        ):
            with pytest.raises(AdaptersUnsupported, match="cannot train or load adapters"):
                attempt()
        assert policy.active_adapter is None
    assert issubclass(AdaptersUnsupported, AdapterError) and issubclass(AdapterError, SiaError)


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_url": "localhost:8000"},
        {"model": ""},
        {"api_key_env": ""},
        {"timeout_s": 0},
        {"max_retries": -1},
        {"backoff_s": float("nan")},
        {"max_concurrency": 0},
        {"token_ids": "magic"},
        {"headers": {"X": 1}},
    ],
)
def test_config_validation(overrides: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"base_url": "http://h/v1", "model": "m", **overrides}
    with pytest.raises(ConfigError):
        OpenAIBackendConfig(**fields)


def test_tokenizer_mode_needs_a_tokenizer_and_config_has_help() -> None:
    from dataclasses import fields

    with pytest.raises(ConfigError, match="needs a tokenizer"):
        OpenAIPolicy(OpenAIBackendConfig("http://h/v1", "m", token_ids="tokenizer"))
    assert all(f.metadata.get("help") for f in fields(OpenAIBackendConfig))


@pytest.mark.parametrize(
    ("text", "tokens", "ids", "logprobs"),
    [
        ("ab", ["a", "b"], [97, 98], [-0.5, -0.25]),  # every token string maps to one id
        ("ab", ["a", "\ufffd"], [97, 98], [-0.5, -0.25]),  # text re-tokenized; counts agree
        ("abc", ["a", "\ufffd"], [97, 98, 99], []),  # counts differ: logprobs would misalign
        ("ab", [], [97, 98], []),  # the endpoint sent no logprobs
    ],
)
def test_tokenizer_mode_maps_token_strings_or_falls_back_to_the_text(
    text: str, tokens: list[str], ids: list[int], logprobs: list[float]
) -> None:
    from sia.models.tiny import build_tiny_tokenizer

    entries = [{"token": t, "logprob": lp} for t, lp in zip(tokens, [-0.5, -0.25], strict=False)]
    body = chat_body(text, logprobs={"content": entries} if entries else None)
    tokenizer = build_tiny_tokenizer()
    with mocked(
        Script(httpx2.Response(200, json=body)), token_ids="tokenizer", tokenizer=tokenizer
    ) as p:
        [generation] = p.generate([CHAT])
    assert generation.completion_ids == ids and generation.logprobs == logprobs
    assert generation.prompt_ids == tokenizer.apply_chat_template(
        CHAT.messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
