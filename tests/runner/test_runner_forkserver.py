"""The episode fork server: forked episodes are separate, confined, and survive a lost server."""

import json
import os
import signal
import textwrap
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from sia.runner import EpisodeLimits, build_job, forkserver, run_episode_process
from sia.runner.errors import RunnerError
from sia.runner.forkserver import ForkServer, fork_server_supported
from sia.runner.sandbox import episode_env, landlock_available

pytestmark = pytest.mark.skipif(not fork_server_supported(), reason="no fork server here")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    with ForkServer(episode_env(tmp_path), landlock=landlock_available()) as started:
        yield started


def _episode(tmp_path: Path, name: str, source: str, server: ForkServer, item: dict | None = None):
    harness = tmp_path / name / "harness"
    harness.mkdir(parents=True)
    (harness / "agent.py").write_text(textwrap.dedent(source))
    scratch = tmp_path / name / "scratch"
    scratch.mkdir()
    job = build_job(item or {"id": name}, {}, "http://127.0.0.1:9/v1", "t", 5)
    return run_episode_process(harness, scratch, job, EpisodeLimits(20), server)


_INTROSPECT = """
    import json, os, sys
    STATE = []
    def solve(client, item, config):
        STATE.append(item["id"])
        return json.dumps({
            "pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd(),
            "home": os.environ.get("HOME"), "state": STATE,
            "preloaded": "openai" in sys.modules, "client": type(client).__name__,
            "forked": sys.modules["__main__"].__file__.endswith("zygote.py"),
        })
"""


def test_each_episode_is_its_own_forked_process(tmp_path: Path, server: ForkServer) -> None:
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(
            pool.map(lambda n: _episode(tmp_path, f"e{n}", _INTROSPECT, server), range(6))
        )
    answers = [json.loads(outcome.answer) for outcome in outcomes]
    assert len({answer["pid"] for answer in answers}) == 6
    for n, answer in enumerate(answers):
        # Its own session (the group the runner kills), its own scratch folder and HOME,
        # and no state carried over from another episode's module.
        assert answer["sid"] == answer["pid"]
        assert answer["cwd"] == str((tmp_path / f"e{n}" / "scratch").resolve())
        assert answer["home"] == str(tmp_path / f"e{n}" / "scratch")
        assert answer["state"] == [f"e{n}"]
        assert answer["preloaded"] and answer["client"] == "OpenAI" and answer["forked"]


def test_a_killed_server_is_started_again(tmp_path: Path, server: ForkServer) -> None:
    first = _episode(tmp_path, "a", _INTROSPECT, server)
    assert first.status == "ok"
    zygote = server._process
    assert zygote is not None
    os.kill(zygote.pid, signal.SIGKILL)
    zygote.wait()
    second = _episode(tmp_path, "b", _INTROSPECT, server)
    assert (second.status, second.reason) == ("ok", "")
    assert server._process is not None and server._process.pid != zygote.pid


def test_closing_the_runner_side_stops_the_server(tmp_path: Path) -> None:
    server = ForkServer(episode_env(tmp_path), landlock=False)
    assert _episode(tmp_path, "a", _INTROSPECT, server).status == "ok"
    zygote = server._process
    assert zygote is not None
    server.close()
    assert zygote.poll() is not None


@pytest.mark.skipif(not landlock_available(), reason="Landlock is not available on this kernel")
def test_ctypes_the_server_loaded_cannot_be_used(tmp_path: Path, server: ForkServer) -> None:
    # The server imported ctypes for Landlock; its classes are reachable without an import.
    source = """
        def solve(client, item, config):
            seen, todo = set(), list(object.__subclasses__())
            while todo:
                cls = todo.pop()
                if cls in seen:
                    continue
                seen.add(cls)
                if cls.__name__ == "_SimpleCData":
                    class Long(cls):
                        _type_ = "l"
                    return str(Long.from_address(id(seen)).value)
                todo.extend(type.__subclasses__(cls))
            return "not loaded"
    """
    outcome = _episode(tmp_path, "c", source, server)
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox: foreign-function use (ctypes."), outcome.reason


def test_a_job_for_a_missing_scratch_folder_fails_the_episode_only(
    tmp_path: Path, server: ForkServer
) -> None:
    harness = tmp_path / "h"
    harness.mkdir()
    (harness / "agent.py").write_text("def solve(client, item, config):\n    return 'x'\n")
    job = build_job({"id": "x"}, {}, "http://127.0.0.1:9/v1", "t", 5)
    outcome = run_episode_process(harness, tmp_path / "gone", job, EpisodeLimits(20), server)
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox: cannot start the episode: FileNotFoundError")
    assert _episode(tmp_path, "after", _INTROSPECT, server).status == "ok"


def test_a_server_that_cannot_start_leaves_episodes_to_fresh_interpreters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "zygote.py"
    broken.write_text("raise SystemExit(3)\n")
    monkeypatch.setattr(forkserver, "_ZYGOTE", broken)
    server = ForkServer(episode_env(tmp_path), landlock=landlock_available())
    with pytest.raises(RunnerError, match="did not start: it exited with code 3"):
        server.spawn(tmp_path, tmp_path, {}, 0)
    # Not tried again: later spawns fail at once with the same reason.
    with pytest.raises(RunnerError, match="exited with code 3"):
        server.spawn(tmp_path, tmp_path, {}, 0)
    outcomes = [_episode(tmp_path, f"e{n}", _INTROSPECT, server) for n in range(2)]
    for outcome in outcomes:
        assert (outcome.status, outcome.reason) == ("ok", ""), outcome.stderr_tail
        answer = json.loads(outcome.answer)
        # A fresh interpreter (not a fork of the server), in its own session.
        assert not answer["forked"] and answer["sid"] == answer["pid"]
