import threading

import pytest

from sia.models.errors import GenerationError
from sia.models.generation import GenRequest, PolicyBackend
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from statemachine.errors import ConfigError

ATOL = 1e-4


def chat(text: str, **kwargs) -> GenRequest:
    return GenRequest(messages=[{"role": "user", "content": text}], **kwargs)


def greedy(text: str, max_tokens: int = 12) -> GenRequest:
    return chat(text, max_tokens=max_tokens, temperature=0.0)


def assert_close(a: list[float], b: list[float], atol: float = ATOL) -> None:
    assert len(a) == len(b)
    assert max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0) <= atol


def test_generates_text_tokens_logprobs_and_usage(tiny_policy):
    (result,) = tiny_policy.generate([greedy("hello", max_tokens=10)])
    assert isinstance(tiny_policy, PolicyBackend)
    assert result.prompt_ids == tiny_policy.encode(greedy("hello"))
    assert tiny_policy.tokenizer.decode(result.prompt_ids).endswith("assistant: ")
    assert len(result.completion_ids) == len(result.logprobs) == 10
    assert result.finish_reason == "length"
    assert all(lp <= 0 for lp in result.logprobs)
    assert result.text == tiny_policy.tokenizer.decode(result.completion_ids)
    assert result.usage.prompt_tokens == len(result.prompt_ids)
    assert result.usage.completion_tokens == 10
    assert result.usage.total_tokens == len(result.prompt_ids) + 10
    assert result.adapter is None


def test_raw_prompt_is_tokenised_without_template(tiny_policy):
    (result,) = tiny_policy.generate([GenRequest(prompt="abc", max_tokens=3, temperature=0)])
    assert result.prompt_ids == [97, 98, 99]


def test_greedy_is_deterministic_across_calls_and_instances(tiny_policy):
    request = greedy("determinism", max_tokens=16)
    first = tiny_policy.generate([request])[0]
    assert tiny_policy.generate([request])[0] == first
    model, tokenizer = build_tiny(seed=0)
    assert HFPolicy(model, tokenizer, packed=tiny_policy.packed).generate([request])[0] == first


def test_seeded_sampling_is_reproducible_and_seed_sensitive(tiny_policy):
    request = chat("sample me", max_tokens=24, temperature=1.0, seed=7)
    first = tiny_policy.generate([request])[0]
    assert first.seed == 7
    assert tiny_policy.generate([request])[0].completion_ids == first.completion_ids
    other = chat("sample me", max_tokens=24, temperature=1.0, seed=8)
    assert tiny_policy.generate([other])[0].completion_ids != first.completion_ids


def test_unseeded_sampling_reports_a_seed_that_reproduces_it(tiny_policy):
    first = tiny_policy.generate([chat("anything", max_tokens=16, temperature=1.0)])[0]
    assert first.seed is not None
    again = chat("anything", max_tokens=16, temperature=1.0, seed=first.seed)
    assert tiny_policy.generate([again])[0].completion_ids == first.completion_ids


def test_batched_greedy_equals_unbatched_for_different_prompt_lengths(tiny_policy):
    requests = [
        greedy("a", 14),
        greedy("a much longer prompt than the first", 9),
        greedy("mid", 20),
    ]
    batched = tiny_policy.generate(requests)
    for request, result in zip(requests, batched, strict=True):
        alone = tiny_policy.generate([request])[0]
        assert result.prompt_ids == alone.prompt_ids
        assert result.completion_ids == alone.completion_ids
        assert_close(result.logprobs, alone.logprobs, atol=1e-5)
    assert [len(r.completion_ids) for r in batched] == [14, 9, 20]


def test_seeded_samples_do_not_depend_on_batch_company(tiny_policy):
    requests = [
        chat(f"prompt {i}" * (i + 1), max_tokens=12, temperature=0.9, seed=100 + i)
        for i in range(5)
    ]
    together = tiny_policy.generate(requests)
    reversed_batch = tiny_policy.generate(requests[::-1])[::-1]
    alone = [tiny_policy.generate([r])[0] for r in requests]
    for a, b, c in zip(together, reversed_batch, alone, strict=True):
        assert a.completion_ids == b.completion_ids == c.completion_ids


def test_batches_larger_than_max_batch_size_are_split():
    model, tokenizer = build_tiny(seed=0)
    small = HFPolicy(model, tokenizer, max_batch_size=2)
    requests = [greedy("x" * (i + 1), 6) for i in range(5)]
    expected = HFPolicy(*build_tiny(seed=0)).generate(requests)
    assert [r.completion_ids for r in small.generate(requests)] == [
        r.completion_ids for r in expected
    ]


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
def test_recorded_logprobs_match_rescoring(tiny_policy, temperature):
    requests = [chat("score " * n, max_tokens=15, temperature=temperature, seed=n) for n in (1, 4)]
    for result in tiny_policy.generate(requests):
        rescored = tiny_policy.score(
            result.prompt_ids, result.completion_ids, temperature=temperature
        )
        assert_close(result.logprobs, rescored)


def test_top_p_logprobs_are_renormalised_within_the_nucleus(tiny_policy):
    request = chat("nucleus", max_tokens=20, temperature=1.0, top_p=0.5, seed=3)
    result = tiny_policy.generate([request])[0]
    rescored = tiny_policy.score(result.prompt_ids, result.completion_ids)
    # Renormalising over a nucleus of mass <= 1 can only raise a token's log-probability.
    assert all(rec >= full - 1e-5 for rec, full in zip(result.logprobs, rescored, strict=True))
    assert any(rec > full + 1e-3 for rec, full in zip(result.logprobs, rescored, strict=True))


def test_stop_string_cuts_text_and_finishes_with_stop(tiny_policy):
    full = tiny_policy.generate([greedy("stop here", 30)])[0]
    # An ASCII character first seen at position >= 1: incremental decoding agrees with the
    # full text on everything before it, whatever multi-byte debris surrounds it.
    index = next(
        i for i, ch in enumerate(full.text) if i >= 1 and ch.isascii() and ch not in full.text[:i]
    )
    stopped = tiny_policy.generate(
        [chat("stop here", max_tokens=30, temperature=0, stop=[full.text[index]])]
    )[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == full.text[:index]
    assert stopped.completion_ids == full.completion_ids[: len(stopped.completion_ids)]
    assert len(stopped.logprobs) == len(stopped.completion_ids) < 30


def test_eos_ends_generation_is_kept_in_ids_and_cut_from_text():
    model, tokenizer = build_tiny(seed=0)
    probe = HFPolicy(model, tokenizer).generate([greedy("eos", 5)])[0]
    # Declare the first greedy token an extra EOS: the model must stop right after it.
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, probe.completion_ids[0]]
    result = HFPolicy(model, tokenizer).generate([greedy("eos", 5)])[0]
    assert result.finish_reason == "stop"
    assert result.completion_ids == probe.completion_ids[:1]
    assert result.logprobs == pytest.approx(probe.logprobs[:1])
    assert result.text == ""


def test_context_limit_clamps_the_budget_or_refuses(tiny_policy):
    near_full = GenRequest(prompt="p" * 509, max_tokens=10, temperature=0)
    result = tiny_policy.generate([near_full])[0]
    assert len(result.completion_ids) == 3
    assert result.finish_reason == "length"
    with pytest.raises(GenerationError, match="no room"):
        tiny_policy.generate([GenRequest(prompt="p" * 512, max_tokens=1)])


def test_encoding_errors_are_generation_errors(tiny_policy):
    with pytest.raises(GenerationError, match="no tokens"):
        tiny_policy.generate([GenRequest(prompt="", max_tokens=1)])
    tiny_policy.tokenizer.chat_template = None
    with pytest.raises(GenerationError, match="cannot encode"):
        tiny_policy.generate([greedy("no template")])


def test_score_edge_cases(tiny_policy):
    assert tiny_policy.score([1, 2], []) == []
    with pytest.raises(GenerationError):
        tiny_policy.score([], [1])
    with pytest.raises(GenerationError):
        tiny_policy.score([1], [2], temperature=-1.0)


def test_empty_request_list_and_wrong_types(tiny_policy):
    assert tiny_policy.generate([]) == []
    with pytest.raises(GenerationError, match="expected GenRequest"):
        tiny_policy.generate([{"prompt": "x"}])


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"prompt": "x", "messages": [{"role": "user", "content": "x"}]},
        {"prompt": "x", "max_tokens": 0},
        {"prompt": "x", "temperature": -0.1},
        {"prompt": "x", "temperature": float("nan")},
        {"prompt": "x", "top_p": 0.0},
        {"prompt": "x", "top_p": 1.5},
        {"prompt": "x", "seed": -1},
        {"prompt": "x", "stop": [""]},
        {"messages": []},
        {"messages": [{"content": "no role"}]},
    ],
)
def test_request_validation(kwargs):
    with pytest.raises(ConfigError):
        GenRequest(**kwargs)


def test_concurrent_callers_get_the_same_results_as_sequential(tiny_policy):
    requests = [greedy(f"thread {i}", 8) for i in range(4)]
    expected = [tiny_policy.generate([r])[0] for r in requests]
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = tiny_policy.generate([requests[i]])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(4)] == expected
