"""Episode tests run twice: a fresh interpreter per episode, and forked from the fork server."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from sia.runner.forkserver import ForkServer, fork_server_supported
from sia.runner.sandbox import episode_env, landlock_available

_SERVERS: dict[bool, ForkServer] = {}
_MODE = {"launch": "exec"}


def current_fork_server() -> ForkServer | None:
    """The server the running test launches episodes with (``None``: exec per episode).

    Looked up at call time, so a test that switches Landlock off gets a server without it.
    """
    if _MODE["launch"] == "exec":
        return None
    landlock = landlock_available()
    if landlock not in _SERVERS:
        _SERVERS[landlock] = ForkServer(episode_env(Path("/tmp")), landlock=landlock)
    return _SERVERS[landlock]


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_servers() -> Iterator[None]:
    yield
    for server in _SERVERS.values():
        server.close()


@pytest.fixture(
    params=[
        "exec",
        pytest.param(
            "fork",
            marks=pytest.mark.skipif(not fork_server_supported(), reason="no fork server here"),
        ),
    ]
)
def launch(request: pytest.FixtureRequest) -> Iterator[str]:
    """Parametrise a test over both ways of starting an episode process."""
    _MODE["launch"] = request.param
    try:
        yield request.param
    finally:
        _MODE["launch"] = "exec"
