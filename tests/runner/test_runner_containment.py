"""Containment: a harness that raises, hangs, hogs memory or reaches for what is not its own
fails its episode with a reason, and nothing else is lost (other episodes, the labels)."""

import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks
from ledger import InMemoryRecorder
from sia.gateway import Gateway
from sia.ports import RolloutRequest
from sia.runner import EpisodeLimits, HarnessRunner, build_job, run_episode_process
from sia.runner import guard as guard_module
from sia.runner.sandbox import LANDLOCK_SWITCH, landlock_available
from tests.gateway.fakes import ScriptedBackend
from tests.runner.conftest import current_fork_server

pytestmark = pytest.mark.usefixtures("launch")

CANARY = "sia-private-label-7c41"
GUARD = Path(guard_module.__file__).resolve()

needs_landlock = pytest.mark.skipif(
    not landlock_available(), reason="Landlock is not available on this kernel"
)


@pytest.fixture
def private(tmp_path: Path) -> Path:
    """A private label file outside the harness and scratch folders (``data/private``)."""
    path = tmp_path / "data" / "private" / "labels.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"x": CANARY}))
    return path


def _run(
    tmp_path: Path,
    source: str,
    item: dict | None = None,
    timeout: float = 20.0,
    memory_mb: int = 2048,
):
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "agent.py").write_text(textwrap.dedent(source))
    # Nested like the runner's scratch folders: the parent of scratch is not scratch.
    scratch = tmp_path / "scratch" / "episode-0"
    scratch.mkdir(parents=True)
    job = build_job(item or {"id": "x"}, {}, "http://127.0.0.1:9/v1", "t", 5)
    return run_episode_process(
        harness, scratch, job, EpisodeLimits(timeout, memory_mb), current_fork_server()
    )


def _no_leak(outcome) -> None:
    for text in (outcome.reason, outcome.stderr_tail, outcome.answer or ""):
        assert CANARY not in text


# --- failures of the harness's own making ------------------------------------------------


def test_raise_fails_with_the_exception_message(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        """
        def solve(client, item, config):
            raise ValueError("the prompt template has no {question}")
        """,
    )
    assert outcome.status == "error"
    assert outcome.reason == "ValueError: the prompt template has no {question}"
    assert "Traceback" in outcome.stderr_tail


def test_endless_loop_times_out_within_the_limit(tmp_path: Path) -> None:
    outcome = _run(
        tmp_path,
        """
        def solve(client, item, config):
            while True:
                pass
        """,
        timeout=3.0,
    )
    assert outcome.status == "timeout"
    assert "3s" in outcome.reason
    assert 3000 <= outcome.duration_ms < 9000


@pytest.mark.parametrize(
    "body",
    [
        "grown = bytearray()\n    while True:\n        grown.extend(bytes(1 << 24))",
        "chunks = []\n    while True:\n        chunks.append(bytearray(1 << 24))",
    ],
    ids=["bytearray", "chunks"],
)
def test_unbounded_allocation_is_a_memory_failure(tmp_path: Path, body: str) -> None:
    outcome = _run(tmp_path, f"def solve(client, item, config):\n    {body}\n", memory_mb=512)
    assert outcome.status == "error"
    assert outcome.reason == "harness ran out of memory"


# --- the private label file ------------------------------------------------------------


@pytest.mark.parametrize(
    "read",
    [
        "open(path).read()",
        "__import__('pathlib').Path(path).read_text()",
        "__import__('os').read(__import__('os').open(path, 0), 100).decode()",
        "open('/proc/self/root' + path).read()",
        "open(__import__('os').path.relpath(path)).read()",
        "str(__import__('os').listdir(__import__('os').path.dirname(path)))",
        "__import__('shutil').copyfile(path, 'copy.json') and open('copy.json').read()",
    ],
    ids=["open", "pathlib", "os.open", "proc-root", "relative", "listdir", "copyfile"],
)
def test_reading_a_private_file_is_refused(tmp_path: Path, private: Path, read: str) -> None:
    outcome = _run(
        tmp_path,
        f"def solve(client, item, config):\n    path = item['path']\n    return {read}\n",
        item={"id": "x", "path": str(private)},
    )
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox: read of ")
    assert outcome.reason.endswith(" denied")
    assert str(private.parent) in outcome.reason
    assert "PermissionError: sandbox: read of" in outcome.stderr_tail
    _no_leak(outcome)


def test_a_caught_refusal_still_fails_the_episode(tmp_path: Path, private: Path) -> None:
    outcome = _run(
        tmp_path,
        """
        def solve(client, item, config):
            try:
                return open(item["path"]).read()
            except PermissionError:
                return "42"
        """,
        item={"id": "x", "path": str(private)},
    )
    assert outcome.status == "error"
    assert outcome.answer is None
    assert outcome.reason.startswith(f"sandbox violation: read of {private} denied")
    _no_leak(outcome)


def test_closing_the_result_pipe_does_not_hide_a_violation(tmp_path: Path, private: Path) -> None:
    outcome = _run(
        tmp_path,
        """
        import os
        def solve(client, item, config):
            for fd in range(3, 64):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                open(item["path"])
            except PermissionError:
                pass
            return "42"
        """,
        item={"id": "x", "path": str(private)},
    )
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox violation")


def test_other_ways_round_the_guard_are_refused(tmp_path: Path, private: Path) -> None:
    """Each attempt is caught by the harness and noted on stderr: all must be refused."""
    outcome = _run(
        tmp_path,
        """
        import os, shutil, sqlite3, sys
        ATTEMPTS = {
            "symlink": lambda p: os.symlink(p, "link.json"),
            "hardlink": lambda p: os.link(p, "link.json"),
            "chdir": lambda p: os.chdir(os.path.dirname(p)),
            "scandir": lambda p: list(os.scandir(os.path.dirname(p))),
            "walk-up": lambda p: open("../../data/private/labels.json").read(),
            "sqlite": lambda p: sqlite3.connect(p),
            "copytree": lambda p: shutil.copytree(os.path.dirname(p), "copy"),
            "write-outside": lambda p: open(os.path.dirname(p) + "/new.txt", "w"),
            "remove": lambda p: os.remove(p),
            "rename": lambda p: os.rename(p, "moved.json"),
            "project": lambda p: open(item_project).read(),
        }
        def solve(client, item, config):
            global item_project
            item_project = item["project"]
            seen = {}
            for name, attempt in ATTEMPTS.items():
                try:
                    attempt(item["path"])
                    seen[name] = "allowed"
                except PermissionError as error:
                    seen[name] = "refused" if "sandbox" in str(error) else f"other: {error}"
            print("ATTEMPTS " + __import__("json").dumps(seen), file=sys.stderr)
            return "42"
        """,
        item={"id": "x", "path": str(private), "project": tasks.__file__},
    )
    seen = json.loads(re.search(r"ATTEMPTS (\{.*\})", outcome.stderr_tail).group(1))
    assert seen == dict.fromkeys(seen, "refused")
    assert len(seen) == 11
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox violation: ")
    assert "(+" in outcome.reason  # several distinct refusals
    assert private.exists() and CANARY in private.read_text()
    _no_leak(outcome)


# --- processes, native code, network, signals ------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        "__import__('subprocess').run(['cat', item['path']])",
        "__import__('os').system('cat /etc/hostname')",
        "__import__('os').fork()",
        "__import__('os').posix_spawn('/bin/true', ['true'], {})",
        "__import__('os').execv('/bin/true', ['true'])",
        "__import__('_posixsubprocess').fork_exec()",
        "__import__('multiprocessing').Process(target=print).start()",
    ],
    ids=["subprocess", "system", "fork", "posix_spawn", "exec", "fork_exec", "multiprocessing"],
)
def test_spawning_a_process_is_refused(tmp_path: Path, private: Path, call: str) -> None:
    outcome = _run(
        tmp_path,
        f"def solve(client, item, config):\n    {call}\n    return 'spawned'\n",
        item={"id": "x", "path": str(private)},
    )
    assert outcome.status == "error"
    assert outcome.reason.startswith("sandbox: process spawn")
    _no_leak(outcome)


@pytest.mark.parametrize("module", ["ctypes", "_ctypes", "cffi", "_xxsubinterpreters"])
def test_native_escape_hatches_cannot_be_imported(tmp_path: Path, module: str) -> None:
    outcome = _run(tmp_path, f"import {module}\ndef solve(client, item, config):\n    return 'x'\n")
    assert outcome.status == "error"
    assert outcome.reason == f"ImportError: sandbox: import of {module} denied"


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (
            "s = socket.socket(); s.settimeout(1); s.connect(('192.0.2.1', 80))",
            "sandbox: connect to '192.0.2.1' (only loopback) denied",
        ),
        (
            "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))",
            "sandbox: send to '192.0.2.1' (only loopback) denied",
        ),
        (
            "socket.getaddrinfo('labels.example.com', 443)",
            "sandbox: name lookup of 'labels.example.com' (only loopback) denied",
        ),
    ],
    ids=["connect", "udp", "dns"],
)
def test_network_is_loopback_only(tmp_path: Path, call: str, reason: str) -> None:
    outcome = _run(
        tmp_path, f"import socket\ndef solve(client, item, config):\n    {call}\n    return 'x'\n"
    )
    assert (outcome.status, outcome.reason) == ("error", reason)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ("os.kill(os.getppid(), 0)", "sandbox: signal 0 to process"),
        (
            "resource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
            "sandbox: changing a resource limit denied",
        ),
        ("gc.get_objects()", "sandbox: walking the garbage collector's objects denied"),
    ],
    ids=["signal-parent", "rlimit", "gc"],
)
def test_the_process_cannot_reach_out_or_lift_its_limits(
    tmp_path: Path, call: str, reason: str
) -> None:
    outcome = _run(
        tmp_path,
        f"import gc, os, resource\ndef solve(client, item, config):\n    {call}\n    return 'x'\n",
    )
    assert outcome.status == "error"
    assert outcome.reason.startswith(reason)


def test_what_a_harness_needs_still_works(tmp_path: Path) -> None:
    source = (
        "import json, os, shutil, socket, tempfile, zoneinfo\n"
        "import helper\n"
        "def solve(client, item, config):\n"
        "    with open('notes.txt', 'w') as file:\n"
        "        file.write('scratch is writable')\n"
        "    os.makedirs('sub/deeper')\n"
        "    os.rename('notes.txt', 'sub/notes.txt')\n"
        "    shutil.copyfile('sub/notes.txt', 'sub/copy.txt')\n"
        "    shutil.rmtree('sub')\n"
        "    with tempfile.NamedTemporaryFile() as handle:\n"
        "        handle.write(b'x')\n"
        "    with open(os.devnull, 'w') as sink:\n"
        "        sink.write('x')\n"
        "    listing = sorted(os.listdir(os.path.dirname(__file__)))\n"
        "    own = open(__file__).read()\n"
        "    status = open('/proc/self/status').read()\n"
        "    zoneinfo.ZoneInfo('Europe/Paris')\n"
        "    with socket.socket() as probe:\n"
        "        probe.settimeout(1)\n"
        "        probe.connect_ex(('127.0.0.1', 9))\n"
        "    return json.dumps([helper.VALUE, listing, 'solve' in own, 'Pid' in status])\n"
    )
    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "agent.py").write_text(source)
    (harness / "helper.py").write_text("VALUE = 5\n")
    scratch = tmp_path / "scratch" / "episode-0"
    scratch.mkdir(parents=True)
    job = build_job({"id": "x"}, {}, "http://127.0.0.1:9/v1", "t", 5)
    outcome = run_episode_process(harness, scratch, job, EpisodeLimits(20), current_fork_server())
    assert (outcome.status, outcome.reason) == ("ok", ""), outcome.stderr_tail
    assert json.loads(outcome.answer) == [5, ["agent.py", "helper.py"], True, True]


# --- Landlock: the kernel layer under the guard ----------------------------------------


def _pem(tmp_path: Path) -> tuple[Path, str]:
    """A private file that OpenSSL can parse: the first certificate of certifi's bundle."""
    import certifi

    bundle = Path(certifi.where()).read_text()
    first = bundle[bundle.index("-----BEGIN CERTIFICATE-----") :]
    first = first[: first.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    path = tmp_path / "data" / "private" / "labels.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(first + "\n")
    import ssl

    subject = ssl._ssl._test_decode_cert(str(path))["serialNumber"]
    return path, subject


_NATIVE_READ = """
import _ssl
def solve(client, item, config):
    # OpenSSL opens the file in C: no audit event, so the guard alone never sees it.
    return repr(_ssl._test_decode_cert(item["path"]))
"""


@needs_landlock
def test_landlock_refuses_reads_the_guard_cannot_see(tmp_path: Path) -> None:
    path, serial = _pem(tmp_path)
    outcome = _run(tmp_path, _NATIVE_READ, item={"id": "x", "path": str(path)})
    assert outcome.status == "error"
    assert serial not in outcome.reason + outcome.stderr_tail


@needs_landlock
def test_without_landlock_the_guard_misses_native_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented limit of the in-process guard, shown: why Landlock is worth having."""
    monkeypatch.setenv(LANDLOCK_SWITCH, "0")
    path, serial = _pem(tmp_path)
    outcome = _run(tmp_path, _NATIVE_READ, item={"id": "x", "path": str(path)})
    assert outcome.status == "ok"
    assert serial in outcome.answer


@needs_landlock
def test_landlock_domain_on_its_own(tmp_path: Path, private: Path) -> None:
    """Landlock without the audit hook: the kernel alone refuses reads, writes, exec, TCP."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    harness = tmp_path / "harness"
    harness.mkdir()
    probe = textwrap.dedent(
        f"""
        import importlib.util, json, os, socket, subprocess, sys
        spec = importlib.util.spec_from_file_location("g", {str(GUARD)!r})
        guard = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(guard)
        abi = guard.apply_landlock(guard.episode_policy({str(harness)!r}, {str(scratch)!r}),
                                   tcp_ports=[9])
        seen = {{"abi": abi}}
        def attempt(name, action):
            try:
                action()
                seen[name] = "allowed"
            except OSError as error:
                seen[name] = error.errno
        attempt("read-private", lambda: open({str(private)!r}).read())
        attempt("list-private", lambda: os.listdir({str(private.parent)!r}))
        attempt("write-scratch", lambda: open({str(scratch / "x")!r}, "w").write("x"))
        attempt("write-harness", lambda: open({str(harness / "x")!r}, "w").write("x"))
        attempt("read-stdlib", lambda: open(os.__file__).read())
        attempt("exec-true", lambda: subprocess.run(["/bin/true"], check=False))
        if abi >= 4:
            sock = socket.socket()
            attempt("tcp-other-port", lambda: sock.connect(("127.0.0.1", 10)))
        if abi >= 6:
            attempt("signal-parent", lambda: os.kill(os.getppid(), 0))
        print(json.dumps(seen))
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen.pop("abi") >= 1
    assert seen.pop("write-scratch") == "allowed"
    assert seen.pop("read-stdlib") == "allowed"
    import errno

    assert seen.pop("signal-parent", errno.EPERM) == errno.EPERM
    assert seen == dict.fromkeys(seen, errno.EACCES)


# --- a whole rollout: each failure stays in its episode --------------------------------

MIXED_AGENT = """
import os, socket, subprocess, sys, time

def solve(client, item, config):
    mode = config["modes"].get(item["id"], "answer")
    if mode == "raise":
        raise RuntimeError("harness bug")
    if mode == "loop":
        while True:
            pass
    if mode == "allocate":
        # Big chunks and no copying: the limit is hit in a few steps even on a busy machine.
        chunks = []
        while True:
            chunks.append(bytearray(1 << 26))
    if mode == "read":
        return open(config["private"]).read()
    if mode == "swallow":
        try:
            return open(config["private"]).read()
        except PermissionError:
            pass
    if mode == "spawn":
        subprocess.run(["cat", config["private"]])
    if mode == "ctypes":
        import ctypes
    if mode == "socket":
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    reply = client.chat.completions.create(
        model="policy",
        messages=[{"role": "user", "content": item["question"]}],
        max_tokens=4,
        temperature=0,
    )
    return reply.choices[0].message.content
"""


@pytest.fixture
def recorder() -> Iterator[InMemoryRecorder]:
    with InMemoryRecorder() as ledger:
        yield ledger


def test_rollout_contains_each_failure_and_keeps_the_rest(
    private: Path, recorder: InMemoryRecorder
) -> None:
    task = tasks.get_task("arith", seed=0)
    behaviours = [
        "raise",
        "loop",
        "allocate",
        "read",
        "swallow",
        "spawn",
        "ctypes",
        "socket",
        "answer",
        "answer",
    ]
    ids = tuple(task.item_ids("train")[: len(behaviours)])
    modes = dict(zip(ids, behaviours, strict=True))
    config = {"modes": modes, "private": str(private)}
    harness = {"agent.py": MIXED_AGENT.encode(), "harness.json": json.dumps(config).encode()}
    request = RolloutRequest(
        run_id="run-c",
        iteration=1,
        harness_commit="h1",
        harness=harness,
        adapter_tag=None,
        adapter_path=None,
        item_ids=ids,
        seed=3,
    )
    with Gateway(ScriptedBackend(reply="7", delay_s=0.0)) as gateway:
        runner = HarnessRunner(
            task, gateway, recorder, concurrency=4, episode_timeout=4.0, memory_mb=512
        )
        result = runner.rollout(request)

    rows = {row.item_id: row for row in recorder.read_episodes("run-c")}
    seen = {mode: (rows[item].status, rows[item].reason) for item, mode in modes.items()}
    assert seen["raise"] == ("error", "RuntimeError: harness bug")
    assert seen["loop"][0] == "timeout"
    assert seen["allocate"] == ("error", "harness ran out of memory")
    assert seen["read"] == ("error", f"sandbox: read of {private} denied")
    assert seen["swallow"][0] == "error"
    assert seen["swallow"][1].startswith(f"sandbox violation: read of {private} denied")
    assert seen["spawn"][0] == "error" and seen["spawn"][1].startswith("sandbox: process spawn")
    assert seen["ctypes"] == ("error", "ImportError: sandbox: import of ctypes denied")
    assert seen["socket"][0] == "error" and "only loopback" in seen["socket"][1]
    assert seen["answer"] == ("ok", "")
    answered = [rows[item] for item, mode in modes.items() if mode == "answer"]
    assert all(row.n_calls == 1 for row in answered)
    assert result.failures == len(behaviours) - 2
    # The harness that swallowed the refusal went on to call the model: recorded, and
    # still a failed episode.
    assert result.metrics["calls"] == 3
    calling = [*answered, rows[ids[behaviours.index("swallow")]]]
    calls = recorder.read_calls("run-c")
    assert {call.episode_id for call in calls} == {row.episode_id for row in calling}
    assert CANARY not in repr(list(rows.values()))
    assert CANARY in private.read_text()


# --- a project installed into site-packages -------------------------------------------


def _installed_layout(tmp_path: Path) -> Path:
    """A site-packages folder holding this project (as ``pip install .`` lays it out) and
    another package, with the guard among the project's files."""
    site = tmp_path / "site-packages"
    for package in guard_module.PROJECT_PACKAGES:
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("LABELS = {'item-1': '42'}\n")
    (site / "sia" / "runner").mkdir()
    (site / "sia" / "runner" / "guard.py").write_bytes(GUARD.read_bytes())
    (site / "other").mkdir()
    (site / "other" / "__init__.py").write_text("")
    (site / "other_pkg-1.0.dist-info").mkdir()
    return site


def test_an_installed_project_is_cut_out_of_site_packages(tmp_path: Path) -> None:
    site = _installed_layout(tmp_path)
    spec = importlib.util.spec_from_file_location(
        "installed_guard", site / "sia" / "runner" / "guard.py"
    )
    installed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installed)
    hidden = installed.project_folders()
    assert sorted(hidden) == sorted(str(site / p) for p in guard_module.PROJECT_PACKAGES)
    kept = installed.excluding([str(site), "/usr/lib/python3"], hidden)
    assert kept == [str(site / "other"), str(site / "other_pkg-1.0.dist-info"), "/usr/lib/python3"]
    # Run from a checkout (``pip install -e``), nothing of site-packages is cut.
    assert guard_module.excluding([str(site)], guard_module.project_folders()) == [str(site)]


@pytest.mark.parametrize("layer", ["hook", pytest.param("landlock", marks=needs_landlock)])
def test_an_installed_projects_task_code_cannot_be_read(tmp_path: Path, layer: str) -> None:
    site = _installed_layout(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    probe = textwrap.dedent(
        f"""
        import importlib.util, json, os
        spec = importlib.util.spec_from_file_location("g", {str(site / "sia/runner/guard.py")!r})
        guard = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(guard)
        read = guard.excluding([{str(site)!r}], guard.project_folders())
        policy = guard.Policy(read, [{str(scratch)!r}])
        if {layer!r} == "landlock":
            assert guard.apply_landlock(policy) >= 1
        else:
            guard.install(policy, os.open(os.devnull, os.O_WRONLY))
        seen = {{}}
        for name, path in [("tasks", {str(site / "tasks/__init__.py")!r}),
                           ("sia", {str(site / "sia/__init__.py")!r}),
                           ("other", {str(site / "other/__init__.py")!r})]:
            try:
                open(path).read()
                seen[name] = "read"
            except PermissionError:
                seen[name] = "refused"
        print(json.dumps(seen))
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"tasks": "refused", "sia": "refused", "other": "read"}
