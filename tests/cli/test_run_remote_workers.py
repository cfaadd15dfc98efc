"""`sia run --workers`: episodes run on `sia worker` processes, every call still recorded in
the run's one ledger."""

import json

import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.runner.remote import EpisodeWorker
from sia.workspace import Workspace


def test_workers_without_their_token_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("SIA_WORKER_TOKEN", raising=False)
    ws = tmp_path / "ws"
    out = CliRunner().invoke(cli, ["-w", str(ws), "run", "--workers", "http://127.0.0.1:9"])
    assert out.exit_code == 1 and "$SIA_WORKER_TOKEN" in out.output
    assert not ws.exists() or not Workspace.open(ws).ledger_path.exists()


@pytest.mark.slow
def test_a_run_on_two_workers_records_every_episode_and_call(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("SIA_WORKER_TOKEN", "t0ken")
    with EpisodeWorker("t0ken") as first, EpisodeWorker("t0ken") as second:
        urls = f"{first.start()},{second.start()}"
        args = ["-w", str(tmp_path / "ws"), "run", "--workers", urls, "--run-id", "r"]
        args += ["--policy", str(tiny_model_dir), "--iterations", "1", "--batch-size", "4"]
        out = CliRunner().invoke(cli, args)
        served = first.episodes_served + second.episodes_served
    assert out.exit_code == 0, out.output
    listed = json.loads(
        CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "episodes", "r", "--json"]).output
    )
    assert served == len(listed) > 0
    assert first.episodes_served and second.episodes_served
    assert all(e["status"] == "ok" and len(e["calls"]) >= 1 for e in listed)
    stored = json.loads(
        CliRunner().invoke(cli, ["-w", str(tmp_path / "ws"), "replay", "r", "--json"]).output
    )
    assert stored["problems"] == []
