"""The README's main job, shortened: `sia run` on the embedded model, then `sia verify`."""

import json

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.workspace import Workspace


@pytest.mark.slow
def test_sia_run_on_smollm2_end_to_end(tmp_path):
    ws = str(tmp_path / "ws")
    out = CliRunner().invoke(
        cli,
        [
            "--workspace",
            ws,
            "run",
            "--task",
            "arith",
            "--mode",
            "h",
            "--iterations",
            "1",
            "--batch-size",
            "4",
            "--run-id",
            "e2e",
        ],
    )
    assert out.exit_code == 0, out.output
    replay = json.loads(
        CliRunner().invoke(cli, ["--workspace", ws, "replay", "e2e", "--json"]).output
    )
    assert replay["status"] == "done" and replay["problems"] == []
    baseline, second = replay["iterations"]
    assert baseline["phases"] == ["PLAN", "EVAL"]
    assert second["lever"] == "edit" and second["agent"] == "offline-feedback"
    assert second["rules"] and second["val_score"] is not None
    assert 0.0 <= replay["test_score"] <= 1.0
    with Workspace.open(tmp_path / "ws").reader() as rec:
        calls = rec.read_calls("e2e")
        episodes = rec.read_episodes("e2e")
    assert len(episodes) >= 4 + 2 * 50  # rollout + two val evaluations (+ test)
    assert all(c.completion_ids and len(c.logprobs) == len(c.completion_ids) for c in calls)
