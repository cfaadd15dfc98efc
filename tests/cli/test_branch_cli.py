"""`sia branch` then `sia resume` on a real run (tiny model), and `sia log` shows the tree."""

import pytest
from click.testing import CliRunner

from sia.cli import cli


@pytest.mark.slow
def test_branch_then_resume_with_another_mode(tmp_path, tiny_model_dir):
    ws = str(tmp_path / "ws")
    invoke = CliRunner().invoke
    run = ["-w", ws, "run", "--policy", str(tiny_model_dir), "--iterations", "2"]
    out = invoke(cli, [*run, "--batch-size", "2", "--run-id", "r", "--quiet"])
    assert out.exit_code == 0, out.output
    out = invoke(cli, ["-w", ws, "branch", "r", "--at", "1", "--mode", "w+h", "--iterations", "1"])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("branched r-at-1 from r after iteration 1")
    assert out.output.strip().endswith("continue with: sia resume r-at-1")
    out = invoke(cli, ["-w", ws, "resume", "r-at-1", "--json"])
    assert out.exit_code == 0, out.output
    assert '"status": "done"' in out.output
    out = invoke(cli, ["-w", ws, "log"])
    lines = out.output.splitlines()
    assert lines[0].startswith("r: mode h, done")
    assert lines[1].startswith("  └── r-at-1 from r after iteration 1")
    assert "mode w+h, done at iteration 2" in lines[1]
    again = invoke(cli, ["-w", ws, "branch", "r", "--at", "5"])
    assert again.exit_code == 1
    assert again.output.strip() == "Error: iteration 5 of r has not finished"
