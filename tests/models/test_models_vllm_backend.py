"""The vllm backend, offline: against a loopback fake of vLLM's HTTP API (attach, serve, a
real Gateway under traffic) and, in process, against a fake ``vllm`` module."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from sia.gateway import Gateway
from sia.models.errors import AdapterError, GenerationError, ModelLoadError, PromptTooLong
from sia.models.generation import GenRequest
from sia.models.vllm_backend import VLLMConfig, VLLMServerPolicy, open_vllm
from sia.models.vllm_config import lora_rank_slot
from statemachine.errors import ConfigError
from tests.gateway.conftest import client_for, ticket
from tests.support import fake_vllm
from tests.support.fake_vllm import FakeVLLM
from tests.support.traffic import traffic_across_adapter_switches

CHAT = GenRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=32, temperature=0)
TEXT = GenRequest(prompt="2+2=", max_tokens=32, temperature=0.5, seed=7)


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    with FakeVLLM() as server:
        yield server


def attach(*servers: FakeVLLM, **overrides: Any) -> VLLMServerPolicy:
    fields: dict[str, Any] = {
        "model": "/models/base",
        "endpoints": tuple(s.base_url for s in servers),
        "max_retries": 1,
        "backoff_s": 0.0,
        "timeout_s": 10.0,
        "api_key_env": "SIA_TEST_VLLM_KEY",
    }
    fields.update(overrides)
    return VLLMServerPolicy(VLLMConfig(**fields))


def adapter_dir(root: Path, name: str, rank: int = 8) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return directory


def answered_by(text: str) -> str:
    """The model name a fake completion names (``"<model>|<n>"``)."""
    return text.split("|")[0]


# ---- generation -----------------------------------------------------------------------------


def test_generation_returns_vllm_ids_and_logprobs(fake: FakeVLLM) -> None:
    with attach(fake) as policy:
        assert policy.base_model == "base"  # discovered from /v1/models
        chat, text = policy.generate([CHAT, TEXT])
    for generation in (chat, text):
        assert answered_by(generation.text) == "base" and generation.adapter is None
        assert generation.completion_ids == list(generation.text.encode())
        assert generation.logprobs == pytest.approx(
            [-0.01 * (i + 1) for i in range(len(generation.completion_ids))]
        )
        assert generation.prompt_ids and generation.finish_reason == "stop"
        assert generation.usage.completion_tokens == len(generation.completion_ids)
    assert chat.prompt_ids == list(b"hi") and text.prompt_ids == list(b"2+2=")
    [chat_body] = fake.calls("/v1/chat/completions")
    [text_body] = fake.calls("/v1/completions")
    assert chat_body["model"] == text_body["model"] == "base"
    assert chat_body["return_token_ids"] and chat_body["return_tokens_as_token_ids"]
    assert chat_body["logprobs"] is True and text_body["logprobs"] == 1
    assert text_body["seed"] == 7 and text_body["temperature"] == 0.5


def test_a_completion_cut_by_max_tokens_finishes_on_length(fake: FakeVLLM) -> None:
    short = dataclasses.replace(CHAT, max_tokens=3)
    with attach(fake, served_model_name="base") as policy:
        [generation] = policy.generate([short])
    assert generation.text == "bas" and generation.finish_reason == "length"
    assert fake.calls("/v1/models") == []  # a named base model needs no discovery


# ---- adapters -------------------------------------------------------------------------------


def test_load_set_and_unload_hit_vllms_endpoints(fake: FakeVLLM, tmp_path: Path) -> None:
    alpha = adapter_dir(tmp_path, "alpha")
    with attach(fake) as policy:
        policy.load_adapter("alpha", alpha)
        assert fake.calls("/v1/load_lora_adapter") == [
            {"lora_name": "alpha", "lora_path": str(alpha.resolve())}
        ]
        assert policy.adapters == ("alpha",) and policy.active_adapter is None
        policy.set_adapter("alpha")
        [tuned] = policy.generate([CHAT])
        policy.set_adapter(None)
        [base] = policy.generate([CHAT])
        policy.set_adapter("alpha")
        policy.unload_adapter("alpha")
        assert policy.active_adapter is None and policy.adapters == ()
    assert (answered_by(tuned.text), tuned.adapter) == ("alpha", "alpha")
    assert (answered_by(base.text), base.adapter) == ("base", None)
    assert [body["model"] for body in fake.calls("/v1/chat/completions")] == ["alpha", "base"]
    assert fake.calls("/v1/unload_lora_adapter") == [{"lora_name": "alpha"}]
    assert fake.loaded == {}


def test_unknown_or_refused_adapters_are_clear_one_line_errors(
    fake: FakeVLLM, tmp_path: Path
) -> None:
    with attach(fake) as policy:
        with pytest.raises(
            AdapterError, match=r"no adapter named 'ghost' is loaded \(loaded: none"
        ):
            policy.set_adapter("ghost")
        with pytest.raises(AdapterError, match="no adapter named 'ghost'"):
            policy.unload_adapter("ghost")
        (tmp_path / "empty").mkdir()
        with pytest.raises(AdapterError, match="HTTP 400: Loading lora x failed") as refused:
            policy.load_adapter("x", tmp_path / "empty")
        with pytest.raises(AdapterError, match="rank 32, above vLLM's max_lora_rank 16"):
            policy.load_adapter("big", adapter_dir(tmp_path, "big", rank=32))
        policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))
        with pytest.raises(AdapterError, match="'alpha' is already loaded"):
            policy.load_adapter("alpha", tmp_path / "alpha")
        # The server forgot the adapter (restarted behind our back): the request says so.
        policy.set_adapter("alpha")
        fake.loaded.clear()
        with pytest.raises(GenerationError, match="HTTP 404: The model `alpha` does not exist"):
            policy.generate([CHAT])
    assert "\n" not in str(refused.value) and policy.adapters == ("alpha",)


def test_a_server_without_runtime_lora_says_how_to_start_it(tmp_path: Path) -> None:
    with (
        FakeVLLM(runtime_lora=False) as fake,
        attach(fake) as policy,
        pytest.raises(AdapterError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"),
    ):
        policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))


def test_an_adapter_left_by_an_earlier_process_is_replaced(fake: FakeVLLM, tmp_path: Path) -> None:
    fake.loaded["alpha"] = "/old/alpha"
    new = adapter_dir(tmp_path, "alpha")
    with attach(fake) as policy:
        policy.load_adapter("alpha", new)
    assert fake.calls("/v1/unload_lora_adapter") == [{"lora_name": "alpha"}]
    assert fake.loaded == {"alpha": str(new.resolve())}


# ---- replicas -------------------------------------------------------------------------------


def test_replicas_take_requests_in_turn_and_each_holds_every_adapter(tmp_path: Path) -> None:
    with FakeVLLM() as one, FakeVLLM() as two, attach(one, two) as policy:
        assert policy.endpoints == (one.base_url, two.base_url)
        policy.generate([CHAT] * 6)
        policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))
        policy.load_adapter("beta", adapter_dir(tmp_path, "beta"))
        policy.set_adapter("beta")
        generations = policy.generate([CHAT] * 4)
        assert len(one.calls("/v1/chat/completions")) == len(two.calls("/v1/chat/completions")) == 5
        assert set(one.loaded) == set(two.loaded) == {"alpha", "beta"}
        assert {answered_by(g.text) for g in generations} == {"beta"}
        # A replica that refuses an adapter leaves none of them holding it.
        two.fail["/v1/load_lora_adapter"] = [500]
        with pytest.raises(AdapterError, match="HTTP 500"):
            policy.load_adapter("gamma", adapter_dir(tmp_path, "gamma"))
        assert "gamma" not in one.loaded and "gamma" not in policy.adapters
        policy.unload_adapter("alpha")
        assert set(one.loaded) == set(two.loaded) == {"beta"}


def test_replicas_serving_different_models_are_refused() -> None:
    with (
        FakeVLLM("base") as one,
        FakeVLLM("other") as two,
        pytest.raises(ModelLoadError, match="replicas serve different models: base, other"),
    ):
        attach(one, two)


# ---- through the gateway --------------------------------------------------------------------


def test_adapters_alternating_under_traffic_are_attributed_to_the_weights_that_answered(
    tmp_path: Path,
) -> None:
    episodes, calls_each = 6, 5
    dirs = {name: adapter_dir(tmp_path, name) for name in ("alpha", "beta")}
    with (
        FakeVLLM(delay_s=0.01) as one,
        FakeVLLM(delay_s=0.01) as two,
        attach(one, two) as policy,
        Gateway(policy, max_batch=4, batch_wait_ms=2) as gateway,
    ):
        clients = [
            client_for(gateway, gateway.register_episode(ticket(f"ep-{i}")))
            for i in range(episodes)
        ]
        rows = traffic_across_adapter_switches(
            gateway, clients, dirs, calls_each=calls_each, max_tokens=32, switch_every_s=0.015
        )
        asked = [b["model"] for s in (one, two) for b in s.calls("/v1/chat/completions")]
    assert len(rows) == episodes * calls_each
    # Traffic really crossed switches, and went to both replicas.
    assert len({row.adapter_tag for row in rows}) >= 2
    assert len(one.calls("/v1/chat/completions")) and len(two.calls("/v1/chat/completions"))
    assert sorted(asked) == sorted(row.adapter_tag or "base" for row in rows)
    for row in rows:
        assert answered_by(row.completion_text) == (row.adapter_tag or "base"), row
        assert bytes(row.completion_ids).decode() == row.completion_text
        assert len(row.logprobs) == len(row.completion_ids)


# ---- failures -------------------------------------------------------------------------------


def test_server_errors_become_one_line_generation_errors(fake: FakeVLLM) -> None:
    fake.fail["/v1/chat/completions"] = [500, 500]
    with attach(fake) as policy, pytest.raises(GenerationError) as caught:
        policy.generate([CHAT])
    assert "HTTP 500: scripted failure (after 2 tries)" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_refused_connection_is_a_one_line_error(tmp_path: Path) -> None:
    with FakeVLLM() as gone:
        url = gone.base_url
    with pytest.raises(ModelLoadError, match=r"cannot reach vLLM at .*/v1/models") as caught:
        VLLMServerPolicy(VLLMConfig(model="m", endpoints=(url,)))
    assert "\n" not in str(caught.value)
    with FakeVLLM() as fake:
        policy = attach(fake, served_model_name="base")
    with policy:
        with pytest.raises(GenerationError, match=r"cannot reach .* \(after 2 tries\)") as lost:
            policy.generate([CHAT])
        with pytest.raises(AdapterError, match="cannot reach"):
            policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))
    assert "\n" not in str(lost.value)


# ---- vllm serve as a subprocess -------------------------------------------------------------


@pytest.fixture
def vllm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``vllm`` executable on PATH that runs the fake server; returns its record file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vllm"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {fake_vllm.__file__} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    monkeypatch.delenv("VLLM_ALLOW_RUNTIME_LORA_UPDATING", raising=False)
    return record


def test_serve_starts_vllm_waits_for_health_and_stops_it(
    vllm_on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_STARTUP_S", "0.5")  # /health is not up at once
    config = VLLMConfig(
        model="/models/base",
        serve=True,
        tensor_parallel_size=2,
        data_parallel_size=2,
        max_loras=3,
        max_lora_rank=32,
        gpu_memory_utilization=0.5,
        serve_args=("--max-model-len", "2048"),
    )
    with open_vllm(config) as policy:
        started = json.loads(vllm_on_path.read_text())
        [generation] = policy.generate([CHAT])
        policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))
        policy.set_adapter("alpha")
        [tuned] = policy.generate([CHAT])
        server = policy._server
        assert server is not None and server.running()
    assert not server.running() and not server.log.exists()
    argv = started["argv"]
    assert argv[:2] == ["serve", "/models/base"]
    flags = " ".join(argv)
    for expected in (
        "--enable-lora",
        "--max-lora-rank 32",
        "--max-loras 3",
        "--tensor-parallel-size 2",
        "--data-parallel-size 2",
        "--gpu-memory-utilization 0.5",
        "--logprobs-mode processed_logprobs",
        "--max-model-len 2048",
    ):
        assert expected in flags
    assert started["env"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert answered_by(generation.text) == "/models/base" and tuned.adapter == "alpha"


def test_a_failed_serve_reports_the_servers_last_line(
    vllm_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VLLM_FAIL", "1")
    with pytest.raises(ModelLoadError, match=r"exited with code 1 .*CUDA out of memory") as caught:
        open_vllm(VLLMConfig(model="m", serve=True))
    assert "\n" not in str(caught.value)


def test_serve_without_vllm_installed_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ModelLoadError, match=r"pip install 'sia\[gpu\]' on a CUDA machine"):
        open_vllm(VLLMConfig(model="m", serve=True))


# ---- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "exactly one of endpoints"),
        ({"serve": True, "in_process": True}, "exactly one of"),
        ({"endpoints": ("http://a/v1",), "serve": True}, "exactly one of"),
        ({"endpoints": ("ftp://a",)}, "http"),
        ({"endpoints": ("http://a/v1", "http://a/v1")}, "must not repeat"),
        ({"serve": True, "max_lora_rank": 12}, "max_lora_rank must be one of"),
        ({"serve": True, "gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"serve": True, "tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"in_process": True, "data_parallel_size": 2}, "needs serve"),
        ({"serve": True, "max_loras": 0}, "max_loras"),
        ({"serve": True, "port": 70000}, "port"),
        ({"serve": True, "model": ""}, "model must not be empty"),
    ],
)
def test_config_validation(overrides: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"model": "m", **overrides}
    with pytest.raises(ConfigError, match=message):
        VLLMConfig(**fields)


def test_config_has_help_and_rank_slots() -> None:
    assert all(f.metadata.get("help") for f in dataclasses.fields(VLLMConfig))
    assert VLLMConfig(model="m", endpoints=["http://a/v1"]).endpoints == ("http://a/v1",)
    assert [lora_rank_slot(r) for r in (1, 4, 8, 9, 64, 300)] == [1, 8, 8, 16, 64, 320]
    with pytest.raises(ConfigError):
        lora_rank_slot(1024)


# ---- in process, against a fake vllm module ------------------------------------------------


class _FakeLLM:
    """Stands in for ``vllm.LLM``: answers ``"<adapter or base>|<n>"`` as vLLM shapes it."""

    instances: list[_FakeLLM] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[tuple[str, list[Any], list[Any], Any]] = []
        self.added: list[Any] = []
        self.removed: list[int] = []
        self.llm_engine = SimpleNamespace(add_lora=self._add, remove_lora=self.removed.append)
        self._count = 0
        _FakeLLM.instances.append(self)

    def _add(self, request: Any) -> bool:
        if not Path(request.lora_path, "adapter_config.json").is_file():
            raise ValueError(f"No adapter found for {request.lora_path}")
        self.added.append(request)
        return True

    def get_tokenizer(self) -> str:
        return "fake-tokenizer"

    def chat(self, messages: list[Any], params: list[Any], *, lora_request: Any, use_tqdm: bool):
        self.calls.append(("chat", messages, params, lora_request))
        return [
            self._output(m[-1]["content"], p, lora_request)
            for m, p in zip(messages, params, strict=True)
        ]

    def generate(self, prompts: list[str], params: list[Any], *, lora_request: Any, use_tqdm: bool):
        self.calls.append(("generate", prompts, params, lora_request))
        if any("x" * 50 in prompt for prompt in prompts):
            raise ValueError(
                "The decoder prompt (length 9999) is longer than the maximum model length"
            )
        return [
            self._output(prompt, p, lora_request) for prompt, p in zip(prompts, params, strict=True)
        ]

    def _output(self, prompt: str, params: Any, lora: Any) -> Any:
        self._count += 1
        full = f"{lora.lora_name if lora else 'base'}|{self._count}"
        text = full[: params.max_tokens]
        ids = list(text.encode())
        logprobs = [{token: SimpleNamespace(logprob=-0.5, rank=1)} for token in ids]
        choice = SimpleNamespace(
            text=text,
            token_ids=ids,
            logprobs=logprobs,
            finish_reason="stop" if text == full else "length",
        )
        return SimpleNamespace(prompt_token_ids=list(prompt.encode()), outputs=[choice])


@pytest.fixture
def fake_vllm_module(monkeypatch: pytest.MonkeyPatch) -> type[_FakeLLM]:
    """``vllm`` and ``vllm.lora.request`` as modules holding the fakes (no GPU here)."""
    module = ModuleType("vllm")
    module.LLM = _FakeLLM  # type: ignore[attr-defined]
    module.SamplingParams = lambda **kwargs: SimpleNamespace(**kwargs)  # type: ignore[attr-defined]
    lora = ModuleType("vllm.lora")
    request = ModuleType("vllm.lora.request")

    @dataclasses.dataclass
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    request.LoRARequest = LoRARequest  # type: ignore[attr-defined]
    for name, mod in (("vllm", module), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    _FakeLLM.instances.clear()
    return _FakeLLM


def test_in_process_engine_generates_with_per_request_lora(
    fake_vllm_module: type[_FakeLLM], tmp_path: Path
) -> None:
    config = VLLMConfig(
        model="/models/base",
        in_process=True,
        max_lora_rank=32,
        max_loras=2,
        tensor_parallel_size=2,
        gpu_memory_utilization=0.6,
    )
    with open_vllm(config) as policy:
        [llm] = fake_vllm_module.instances
        sampled = GenRequest(prompt="p", max_tokens=32, temperature=0.9)
        chat, text, again = policy.generate([CHAT, TEXT, sampled])
        policy.load_adapter("alpha", adapter_dir(tmp_path, "alpha"))
        policy.load_adapter("beta", adapter_dir(tmp_path, "beta"))
        policy.set_adapter("beta")
        [tuned] = policy.generate([CHAT])
        with pytest.raises(AdapterError, match="no adapter named 'ghost'"):
            policy.set_adapter("ghost")
        with pytest.raises(AdapterError, match="not a peft adapter"):
            policy.load_adapter("gamma", tmp_path / "missing")
        policy.unload_adapter("beta")
        assert policy.active_adapter is None and policy.tokenizer == "fake-tokenizer"
        with pytest.raises(PromptTooLong, match="maximum model length"):
            policy.generate([GenRequest(prompt="x" * 60)])
    assert llm.kwargs == {
        "model": "/models/base",
        "served_model_name": None,
        "enable_lora": True,
        "max_lora_rank": 32,
        "max_loras": 2,
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.6,
        "logprobs_mode": "processed_logprobs",
    }
    # Results keep request order although chat and text go to vLLM separately.
    assert [answered_by(g.text) for g in (chat, text, again)] == ["base"] * 3
    assert chat.prompt_ids == list(b"hi") and text.prompt_ids == list(b"2+2=")
    assert chat.completion_ids == list(chat.text.encode()) and chat.logprobs == [-0.5] * len(
        chat.completion_ids
    )
    kind, _, params, lora = llm.calls[1]
    assert kind == "generate" and lora is None
    assert [(p.logprobs, p.seed, p.temperature) for p in params[:1]] == [(0, 7, 0.5)]
    assert params[1].seed is not None  # a sampled request without a seed gets one, reported
    assert again.seed == params[1].seed and chat.seed is None
    assert (answered_by(tuned.text), tuned.adapter) == ("beta", "beta")
    assert [(r.lora_name, r.lora_int_id) for r in llm.added] == [("alpha", 1), ("beta", 2)]
    assert llm.calls[2][3].lora_name == "beta" and llm.removed == [2]


def test_in_process_without_vllm_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail
    with pytest.raises(ModelLoadError, match=r"pip install 'sia\[gpu\]' on a CUDA machine"):
        open_vllm(VLLMConfig(model="m", in_process=True))


def test_continuous_runs_admit_requests_while_others_are_in_flight(fake: FakeVLLM) -> None:
    """The gateway's continuous path: admitted requests join; each is answered on its own."""
    results: dict[int, Any] = {}
    later = [TEXT, CHAT]

    def admit(room: int) -> list[GenRequest]:
        assert room > 0
        return [later.pop(0)] if later else []

    with attach(fake) as policy:
        policy.generate_continuous([CHAT], admit, results.__setitem__)
    assert sorted(results) == [0, 1, 2]
    assert all(answered_by(g.text) == "base" and g.adapter is None for g in results.values())
    assert len(fake.calls("/v1/chat/completions")) == 2 and len(fake.calls("/v1/completions")) == 1
