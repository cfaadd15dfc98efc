"""Looking for a secret everywhere a run leaves something: files, git objects, outputs."""

from __future__ import annotations

from pathlib import Path

import pygit2
from click.testing import CliRunner

from sia.cli import cli

__all__ = ["assert_nowhere"]


def assert_nowhere(secret: str, ws: Path, run_id: str, outputs: Path) -> None:
    """``secret`` is in no file of the workspace, no git object (loose objects are
    compressed, so they are read through git), no output of the read commands, and no
    report or export of ``run_id`` (written to ``outputs``)."""
    needle = secret.encode()
    for path in ws.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path
    repo = pygit2.Repository(str(ws / "harness.git"))
    for oid in repo.odb:
        assert needle not in repo.odb.read(oid)[1], oid
    outputs.mkdir(exist_ok=True)
    for args in (
        ["report", run_id, "--out", str(outputs / f"{run_id}.html")],
        ["export", run_id, "--out", str(outputs / f"{run_id}.jsonl")],
        ["export", run_id, "--out", str(outputs / f"{run_id}.parquet")],
        ["status", "--json"],
        ["log", run_id],
        ["episodes", run_id, "--json"],
        ["why", run_id, "1", "--json"],
        ["replay", run_id],
        ["verify", run_id],
    ):
        out = CliRunner().invoke(cli, ["-w", str(ws), *args])
        assert out.exit_code == 0, (args, out.output)
        assert secret not in out.output, args
    for path in outputs.iterdir():
        assert path.stat().st_size > 0 and needle not in path.read_bytes(), path
