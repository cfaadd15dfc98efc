"""`sia replay --rerun`: recorded iterations re-executed and compared token by token.

Real runs on the tiny model: a greedy run reproduces with no divergence; the same run
against changed model weights is caught at the first differing token; a tampered adapter
is refused by its sha256 before anything runs.
"""

import json
import shutil

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.models.tiny import build_tiny
from sia.workspace import Workspace
from tests.support.any_number import registered


@pytest.fixture(scope="module")
def greedy_run(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("rerun")
    model = root / "model"
    shutil.copytree(tiny_model_dir, model)
    ws = root / "ws"
    args = ["-w", str(ws), "run", "--mode", "h", "--policy", str(model), "--iterations", "2"]
    out = CliRunner().invoke(cli, [*args, "--batch-size", "3", "--run-id", "r", "--quiet"])
    assert out.exit_code == 0, out.output
    return ws, model


def _rerun(ws, *extra):
    out = CliRunner().invoke(cli, ["-w", str(ws), "replay", "r", "--rerun", "--json", *extra])
    return out.exit_code, out


@pytest.mark.slow
def test_a_greedy_run_reruns_without_divergence(greedy_run):
    ws, _ = greedy_run
    code, out = _rerun(ws)
    assert code == 0, out.output
    reports = json.loads(out.stdout)["rerun"]
    assert {(r["iteration"], r["purpose"]) for r in reports} == {
        (0, "eval"),
        (1, "rollout"),
        (1, "eval"),
        (2, "rollout"),
        (2, "eval"),
    }
    assert all(r["episodes"] > 0 and r["calls"] > 0 for r in reports)
    assert all(r["divergences"] == [] for r in reports)


@pytest.mark.slow
def test_changed_weights_are_caught_at_the_first_differing_token(greedy_run, tmp_path):
    ws, model = greedy_run
    other, _ = build_tiny(seed=1)
    saved = tmp_path / "weights"
    shutil.copytree(model, saved)
    try:
        other.save_pretrained(model)  # same path, same tokenizer, different weights
        code, out = _rerun(ws, "--iterations", "0")
    finally:
        shutil.rmtree(model)
        shutil.copytree(saved, model)
    assert code == 1
    (report,) = json.loads(out.stdout)["rerun"]
    first = report["divergences"][0]
    assert first["what"] == "tokens" and first["call"] == 0
    assert first["recorded"] != first["rerun"]
    assert len(report["divergences"]) <= report["episodes"]


@pytest.mark.slow
def test_a_tampered_adapter_is_refused_before_anything_runs(tmp_path, tiny_model_dir):
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--mode", "w", "--policy", str(tiny_model_dir)]
    args += ["--task", "any-number", "--iterations", "1", "--batch-size", "2"]
    with registered():
        out = CliRunner().invoke(cli, [*args, "--algorithm", "bon_bc", "--run-id", "r"])
        assert out.exit_code == 0, out.output
        workspace = Workspace.open(ws)
        (tag,) = workspace.repo().adapter_tags("r")
        digest = workspace.repo().adapter_manifest(tag)["sha256"]
        weights = workspace.artifacts().root / "sha256" / digest / "adapter_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.chmod(0o644)
        weights.write_bytes(bytes(data))
        code, out = _rerun(ws)
    assert code == 1
    assert "corrupt" in out.output and digest[:12] in out.output
