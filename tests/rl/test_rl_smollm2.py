"""The embedded SmolLM2 end to end: rollouts recorded by the hf backend train an adapter
that the backend then serves. Checks the seams between the two, on the real model."""

import copy

import pytest
import torch

from rl.data import Sample
from rl.train import train_lora
from sia.models import load_model
from sia.models.generation import GenRequest
from sia.models.hf_backend import HFPolicy

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")]

QUESTIONS = ("What is 3+4?", "What is 12+7?")


@pytest.fixture(autouse=True)
def one_thread():
    # Overrides tests/rl/conftest.py's: the real model does gain from both cores.
    yield


def test_backend_rollouts_train_an_adapter_the_backend_serves(tmp_path):
    model, tokenizer = load_model("smollm2-135m-instruct")
    base = copy.deepcopy(model)
    backend = HFPolicy(model, tokenizer)
    requests = [
        GenRequest(
            messages=[{"role": "user", "content": q}], max_tokens=8, temperature=0.8, seed=seed
        )
        for q in QUESTIONS
        for seed in range(4)
    ]
    generations = backend.generate(requests)
    samples = [
        Sample(
            g.prompt_ids,
            g.completion_ids,
            g.logprobs,
            reward=float(sum(ch.isdigit() for ch in g.text)) + 0.1 * i,  # distinct in groups
            group=r.messages[0]["content"],
            temperature=r.temperature,
        )
        for i, (g, r) in enumerate(zip(generations, requests, strict=True))
    ]
    result = train_lora(
        base,
        tokenizer,
        samples,
        "grpo",
        config={"epochs": 1, "minibatch_size": 8, "micro_batch_size": 4},
        out_dir=tmp_path,
    )
    # The trainer scores the recorded tokens as the backend sampled them: ratio 1 at first.
    assert result.metrics["stats"]["approx_kl"][0] < 1e-6
    assert result.metrics["stats"]["clip_fraction"][0] == 0.0

    backend.load_adapter("trained", tmp_path)
    backend.set_adapter("trained")
    base.eval()
    probe = samples[0]
    served = backend.score(probe.prompt_ids, probe.completion_ids)
    ids = torch.tensor([probe.prompt_ids + probe.completion_ids])
    with torch.no_grad():
        logits = base(input_ids=ids).logits[0, len(probe.prompt_ids) - 1 : -1]
    trained = torch.log_softmax(logits, -1).gather(-1, ids[0, len(probe.prompt_ids) :, None])
    assert served == pytest.approx(trained.squeeze(-1).tolist(), abs=1e-4)
    backend.set_adapter(None)
    assert backend.score(probe.prompt_ids, probe.completion_ids) != pytest.approx(served, abs=1e-6)
