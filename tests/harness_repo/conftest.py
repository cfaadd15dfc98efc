import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness_repo import HarnessRepo


@pytest.fixture
def repo(tmp_path: Path) -> HarnessRepo:
    return HarnessRepo.init(tmp_path / "harness.git")


@pytest.fixture
def git(tmp_path: Path) -> Callable[..., str]:
    """Run the real git CLI against a repository and return its stdout."""
    if shutil.which("git") is None:
        pytest.skip("the git command-line tool is not installed")
    # Keep the user's and the system's git configuration out of the assertions.
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "HOME": str(tmp_path),
        "LC_ALL": "C",
    }

    def run(repo_path: Path, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo_path), *args],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    return run
