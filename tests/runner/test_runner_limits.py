"""Resource limits of one episode: file size, open files, processes and the scratch quota.

Each runs in both launch modes (fresh interpreter and fork server): the process limits are
set inside the episode, the scratch quota is watched by the runner.
"""

import json
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from sia.runner import EpisodeLimits, build_job, run_episode_process
from sia.runner.remote import _limits
from sia.runner.scratch import remove_scratch, usage
from tests.runner.conftest import current_fork_server

MB = 1024 * 1024


def _run(tmp_path: Path, source: str, limits: EpisodeLimits):
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "agent.py").write_text(textwrap.dedent(source))
    scratch = tmp_path / "scratch" / "episode-0"
    scratch.mkdir(parents=True)
    job = build_job({"id": "x"}, {}, "http://127.0.0.1:9/v1", "t", 5)
    started = time.perf_counter()
    outcome = run_episode_process(harness, scratch, job, limits, current_fork_server())
    return outcome, scratch, time.perf_counter() - started


@pytest.mark.usefixtures("launch")
def test_every_process_limit_is_set_in_the_episode(tmp_path: Path) -> None:
    limits = EpisodeLimits(20.0, memory_mb=768, file_mb=9, open_files=77, processes=5)
    outcome, _, _ = _run(
        tmp_path,
        """
        import json, signal
        def solve(client, item, config):
            table = {}
            for line in open("/proc/self/limits").read().splitlines()[1:]:
                name, soft, hard = line[:26].strip(), line[26:47].split(), line[47:68].split()
                table[name] = [soft[0], hard[0]]
            table["sigxfsz"] = signal.getsignal(signal.SIGXFSZ) == signal.SIG_DFL
            return json.dumps(table)
        """,
        limits,
    )
    assert outcome.status == "ok", outcome.reason
    seen = json.loads(outcome.answer)
    both = lambda value: [str(value), str(value)]  # noqa: E731 - soft and hard alike
    assert seen["Max file size"] == both(9 * MB)
    assert seen["Max open files"] == both(77)
    assert seen["Max address space"] == both(768 * MB)
    assert seen["Max cpu time"] == both(25)
    assert seen["Max core file size"] == both(0)
    # The machine's task count plus the episode's own room: at least 5, at most a ceiling.
    processes = int(seen["Max processes"][0])
    assert seen["Max processes"][1] == str(processes)
    assert 5 < processes < 5 + 4 * 1024 * 1024
    assert seen["sigxfsz"] is True


_WRITE_ONE_GB = """
def solve(client, item, config):
    block = b"x" * (1 << 20)
    with open("big.bin", "wb") as file:
        for _ in range(1024):
            try:
                file.write(block)
                file.flush()
            except OSError:
                pass  # catching the error does not help: the signal ends the episode
    return "wrote 1 GB"
"""


@pytest.mark.usefixtures("launch")
def test_a_one_gigabyte_file_stops_at_the_file_size_limit(tmp_path: Path) -> None:
    outcome, scratch, seconds = _run(tmp_path, _WRITE_ONE_GB, EpisodeLimits(20.0, file_mb=8))
    assert (outcome.status, outcome.reason) == (
        "error",
        "episode wrote a file past its 8 MB file-size limit",
    )
    assert (scratch / "big.bin").stat().st_size == 8 * MB
    assert seconds < 10


@pytest.mark.usefixtures("launch")
def test_an_uncaught_efbig_is_named_too(tmp_path: Path) -> None:
    """A harness that ignores SIGXFSZ again gets EFBIG; uncaught, it has a clear reason."""
    source = """
    import signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    def solve(client, item, config):
        with open("big.bin", "wb") as file:
            file.write(b"x" * (3 << 20))
        return "x"
    """
    outcome, _, _ = _run(tmp_path, source, EpisodeLimits(20.0, file_mb=2))
    assert (outcome.status, outcome.reason) == (
        "error",
        "harness wrote a file past its 2 MB file-size limit",
    )


@pytest.mark.usefixtures("launch")
def test_many_small_files_stop_at_the_scratch_quota(tmp_path: Path) -> None:
    source = """
    def solve(client, item, config):
        block = b"x" * (1 << 20)
        for n in range(1024):
            with open(f"part-{n}.bin", "wb") as file:
                file.write(block)
        return "wrote 1 GB"
    """
    limits = EpisodeLimits(20.0, file_mb=8, scratch_mb=32)
    outcome, scratch, seconds = _run(tmp_path, source, limits)
    assert (outcome.status, outcome.reason) == (
        "error",
        "episode wrote more than 32 MB to its scratch",
    )
    left, _ = usage(scratch, 10_000)
    # The watch looks every 50 ms: what a fast disk takes in a few looks, not a gigabyte.
    assert 32 * MB < left < 32 * MB + 256 * MB
    assert seconds < 10


@pytest.mark.usefixtures("launch")
def test_too_many_files_stop_at_the_scratch_quota(tmp_path: Path) -> None:
    source = """
    import os
    def solve(client, item, config):
        for n in range(100_000):
            open(f"empty-{n}", "w").close()
        return "made 100k files"
    """
    outcome, _, _ = _run(tmp_path, source, EpisodeLimits(20.0, scratch_files=300))
    assert (outcome.status, outcome.reason) == (
        "error",
        "episode created more than 300 files in its scratch",
    )


@pytest.mark.usefixtures("launch")
def test_what_an_episode_leaves_counts_even_locked_and_after_it_returned(
    tmp_path: Path,
) -> None:
    source = """
    import os
    def solve(client, item, config):
        os.mkdir("hidden")
        for n in range(6):
            with open(f"hidden/{n}.bin", "wb") as file:
                file.write(b"x" * (1 << 20))
        os.chmod("hidden", 0)
        return "done"
    """
    outcome, scratch, _ = _run(tmp_path, source, EpisodeLimits(20.0, scratch_mb=4))
    assert (outcome.status, outcome.answer) == ("error", None)
    assert outcome.reason == "episode wrote more than 4 MB to its scratch"
    remove_scratch(scratch)
    assert not scratch.exists()


@pytest.mark.usefixtures("launch")
def test_open_files_are_limited(tmp_path: Path) -> None:
    source = """
    def solve(client, item, config):
        kept = [open(f"f{n}", "w") for n in range(1000)]
        return str(len(kept))
    """
    outcome, _, _ = _run(tmp_path, source, EpisodeLimits(20.0, open_files=64))
    assert outcome.status == "error"
    assert outcome.reason.startswith("OSError: [Errno 24] Too many open files")


def test_limits_travel_to_remote_workers_old_and_new() -> None:
    sent = EpisodeLimits(7.0, memory_mb=300, file_mb=3, open_files=40, scratch_mb=9)
    assert _limits(json.loads(json.dumps(asdict(sent)))) == sent
    # An orchestrator from before these limits: the worker applies its defaults.
    assert _limits({"timeout_s": 7, "memory_mb": 300}) == EpisodeLimits(7.0, 300)
    # One from after: fields this worker does not know are ignored.
    assert _limits({**asdict(sent), "gpu_seconds": 3}) == sent
    with pytest.raises(ValueError, match="file_mb must be >= 1, got 0"):
        _limits({**asdict(sent), "file_mb": 0})
    with pytest.raises(KeyError):
        _limits({"timeout_s": 7})


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        EpisodeLimits(0)
    with pytest.raises(ValueError, match="open_files must be >= 32, got 3"):
        EpisodeLimits(open_files=3)
