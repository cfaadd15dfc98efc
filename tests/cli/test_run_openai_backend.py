"""`sia run --backend openai`: the whole loop against an OpenAI-compatible endpoint.

The endpoint is real: a second gateway serving a tiny local model over loopback HTTP.
"""

import json

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.config import RunConfig
from sia.gateway import EpisodeTicket, Gateway
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from sia.workspace import Workspace
from statemachine.errors import ConfigError

KEY_ENV = "SIA_TEST_UPSTREAM_KEY"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"backend": "tgi"}, "backend must be one of"),
        ({"backend": "openai"}, "needs --endpoint"),
        ({"backend": "openai", "endpoint": "http://x/v1", "mode": "w+h"}, "mode h only"),
        ({"endpoint": "http://x/v1"}, "for the openai or vllm backend"),
    ],
)
def test_backend_fields_are_validated(fields, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**fields)


def test_old_configs_without_backend_fields_load_as_hf():
    data = RunConfig().to_dict()
    for key in ("backend", "endpoint", "api_key_env"):
        del data[key]
    assert RunConfig.from_dict(data).backend == "hf"


@pytest.mark.slow
def test_a_run_against_an_openai_compatible_endpoint(tmp_path, monkeypatch):
    model, tokenizer = build_tiny(seed=0)
    ticket = EpisodeTicket("upstream", 0, "any", "-", None, max_calls=10**6, max_tokens=10**8)
    with Gateway(HFPolicy(model, tokenizer)) as upstream:
        key = upstream.register_episode(ticket)
        monkeypatch.setenv(KEY_ENV, key)
        ws = tmp_path / "ws"
        args = ["--workspace", str(ws), "run", "--backend", "openai", "--policy", "tiny"]
        args += ["--endpoint", upstream.base_url, "--api-key-env", KEY_ENV]
        args += ["--iterations", "1", "--batch-size", "2", "--run-id", "o1", "--json"]
        out = CliRunner().invoke(cli, args)
        served = len(upstream.drain_calls())
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["test"] is not None
    with Workspace.open(ws).reader() as rec:
        calls = rec.read_calls("o1")
        stored = "\n".join(json.dumps(e.payload) for e in rec.read("o1"))
    # Every call the run made went upstream, and each is attributed to one of its episodes.
    assert len(calls) == served > 0
    assert all(c.episode_id and c.completion_text is not None for c in calls)
    # The key was used on every upstream call, yet no event holds it.
    assert '"api_key_env": "SIA_TEST_UPSTREAM_KEY"' in stored
    assert key not in stored
