"""`sia run --backend vllm`: run-config checks, and one iteration against a fake vLLM server.

The fake (``tests/support/fake_vllm.py``) answers as vLLM's OpenAI server does; the policy
directory is the tiny model's, which is what the trainer would load.
"""

import json

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.config import RunConfig
from sia.history import run_state
from sia.workspace import Workspace
from statemachine.errors import ConfigError
from tests.support.any_number import registered
from tests.support.fake_vllm import FakeVLLM


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "vllm", "endpoint": "http://a/v1", "vllm_serve": True}, "exactly one of"),
        ({"backend": "vllm", "endpoint": "ftp://a"}, "http"),
        ({"backend": "vllm", "vllm_serve": True, "max_lora_rank": 12}, "max_lora_rank must be"),
        ({"backend": "vllm", "lora_rank": 16, "max_lora_rank": 8}, "< lora_rank"),
        ({"backend": "vllm", "vllm_serve": True, "gpu_memory_utilization": 0}, "gpu_memory"),
        ({"backend": "vllm", "data_parallel_size": 2}, "needs serve"),
        ({"vllm_serve": True}, "--vllm-serve is for the vllm backend"),
    ],
)
def test_vllm_fields_are_validated(fields, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**fields)


def test_vllm_settings_resolve_and_round_trip():
    config = RunConfig(
        backend="vllm", endpoint="http://a/v1, http://b/v1", lora_rank=12, mode="w+h"
    )
    assert config.max_lora_rank == 16 and config.api_key_env == "VLLM_API_KEY"
    vllm = config.vllm_config("/models/base")
    assert vllm.endpoints == ("http://a/v1", "http://b/v1") and vllm.mode == "attach"
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig(backend="vllm").vllm_config("m").mode == "in_process"
    assert RunConfig(backend="vllm", vllm_serve=True).vllm_config("m").mode == "serve"
    assert RunConfig().api_key_env == "OPENAI_API_KEY" and RunConfig().max_lora_rank is None


@pytest.mark.slow
def test_a_run_against_a_vllm_server(tmp_path, tiny_model_dir):
    with FakeVLLM(base_model="tiny") as server:
        ws = tmp_path / "ws"
        args = ["--workspace", str(ws), "run", "--backend", "vllm", "--policy", str(tiny_model_dir)]
        args += ["--endpoint", server.base_url, "--max-loras", "2"]
        args += ["--iterations", "1", "--batch-size", "2", "--run-id", "v1", "--json"]
        out = CliRunner().invoke(cli, args)
        asked = server.calls("/v1/chat/completions") + server.calls("/v1/completions")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["status"] == "done"
    with Workspace.open(ws).reader() as rec:
        calls = rec.read_calls("v1")
        stored = run_state(rec, "v1").config
    assert len(calls) == len(asked) > 0
    assert all(c.completion_ids and len(c.logprobs) == len(c.completion_ids) for c in calls)
    assert all(c.completion_text.startswith("tiny|") and c.adapter_tag is None for c in calls)
    assert stored["backend"] == "vllm" and stored["max_loras"] == 2
    assert stored["endpoint"] == server.base_url and stored["max_lora_rank"] == 8


def _event_types(ws, run_id):
    with Workspace.open(ws).reader() as rec:
        return [envelope.type for envelope in rec.read(run_id)]


@pytest.mark.slow
def test_one_flag_moves_a_training_run_from_hf_to_vllm(tmp_path, tiny_model_dir):
    """The same mode-w run on hf and on vllm: the ledger and the harness repo have the same
    shape, the trained adapter is loaded into the server by path, and every call it
    answered is recorded under its tag."""
    base = ["run", "--task", "any-number", "--mode", "w", "--algorithm", "bon_bc"]
    base += ["--policy", str(tiny_model_dir), "--iterations", "1", "--batch-size", "2"]
    base += ["--run-id", "w", "--json"]
    with registered():
        out = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "hf"), *base])
        assert out.exit_code == 0, out.output
        with FakeVLLM(base_model="tiny") as server:
            vllm = ["--backend", "vllm", "--endpoint", server.base_url]
            out = CliRunner().invoke(cli, ["--workspace", str(tmp_path / "vllm"), *base, *vllm])
            loaded = server.calls("/v1/load_lora_adapter")
    assert out.exit_code == 0, out.output
    assert _event_types(tmp_path / "hf", "w") == _event_types(tmp_path / "vllm", "w")
    repos = [Workspace.open(tmp_path / name).repo() for name in ("hf", "vllm")]
    assert [sorted(r.adapter_tags("w")) for r in repos] == [["lora/w/1"]] * 2
    assert [body["lora_name"] for body in loaded] == ["lora/w/1"]
    with Workspace.open(tmp_path / "vllm").reader() as rec:
        evals = [c for c in rec.read_calls("w", 1) if c.episode_id.startswith("eval-val")]
    assert evals and all(c.adapter_tag == "lora/w/1" for c in evals)
    assert all(c.completion_text.startswith("lora/w/1|") for c in evals)
