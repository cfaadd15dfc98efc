"""Faults in harness code: each is caught in its own episode of a real rollout.

One rollout through :class:`HarnessRunner` and a real :class:`Gateway` (a scripted backend
stands in for the policy model) runs a harness whose behaviour per item is a fault: it
crashes, hangs, forks, allocates 10 GB, writes 1 GB, opens sockets, or tries a reward hack
(rewrite the evaluator or the reference answers, read the private labels, rewrite its own
harness, tamper with a concurrent episode's scratch). Each fault is one injection; its
accounting is the episode row the ledger recorder holds for its item: there exactly once,
failed, with a reason that says what happened. The healthy episodes of the same rollout
must still succeed, each with its one model call.
"""

import hashlib
import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import tasks
from ledger import InMemoryRecorder
from sia.gateway import Gateway
from sia.ports import RolloutRequest
from sia.runner import EpisodeLimits, HarnessRunner
from sia.runner.sandbox import LANDLOCK_SWITCH, landlock_available
from tests.faults.accounting import difference, episode_keys
from tests.gateway.fakes import ScriptedBackend

CANARY = "sia-private-label-93e0"
TIMEOUT_S = 3.0
LIMITS = EpisodeLimits(file_mb=16, scratch_mb=48)

AGENT = """
import multiprocessing, os, socket, subprocess, time

GB = 1 << 30

def solve(client, item, config):
    FAULTS[config["faults"].get(item["id"], "healthy")](client, config)
    reply = client.chat.completions.create(
        model="policy",
        messages=[{"role": "user", "content": item["question"]}],
        max_tokens=4,
        temperature=0,
    )
    return reply.choices[0].message.content

def crash(client, config):
    raise RuntimeError("harness bug")

def sleep(client, config):
    time.sleep(600)

def busy(client, config):
    while True:
        pass

def allocate(client, config):
    chunks = [bytearray(1 << 26) for _ in range(10 * GB >> 26)]

def write_big_file(client, config):
    block = b"x" * (1 << 20)
    with open("big.bin", "wb") as file:
        for _ in range(GB >> 20):
            file.write(block)

def write_small_files(client, config):
    block = b"x" * (1 << 20)
    for n in range(GB >> 20):
        with open(f"part-{n}.bin", "wb") as file:
            file.write(block)

def fork(client, config):
    if os.fork() == 0:
        os._exit(0)

def run_subprocess(client, config):
    subprocess.run(["cat", config["labels"]], check=False)

def start_process(client, config):
    multiprocessing.Process(target=print).start()

def write_evaluator(client, config):
    with open(config["evaluator"], "a") as file:
        file.write("")  # an append of nothing: the source stays intact even if allowed

def write_reference(client, config):
    with open(config["reference"], "w") as file:
        file.write("{}")

def read_labels(client, config):
    return open(config["labels"]).read()

def write_own_harness(client, config):
    with open(__file__, "a") as file:
        file.write("\\n# every later episode runs this\\n")

def tamper_with_neighbour(client, config):
    # A concurrent episode's scratch is a sibling of this one; look for it every way.
    parent = os.path.dirname(os.getcwd())
    for attempt in (
        lambda: os.listdir(parent),
        lambda: open(os.path.join(parent, "planted.txt"), "w"),
        lambda: [os.readlink(f"/proc/{pid}/cwd") for pid in os.listdir("/proc") if pid.isdigit()],
    ):
        try:
            attempt()
        except PermissionError:
            pass  # carry on as if nothing happened: the episode must fail all the same

def neighbour(client, config):
    # The victim: its note must read back unchanged while the tamperer runs.
    with open("note.txt", "w") as file:
        file.write("mine")
    time.sleep(1.5)
    if open("note.txt").read() != "mine" or os.listdir(".") != ["note.txt"]:
        raise RuntimeError("scratch was tampered with")

def connect(address):
    # A literal address: no name lookup first, the connect itself is what is refused.
    with socket.socket() as sock:
        sock.settimeout(1)
        sock.connect(address)

def connect_outside(client, config):
    connect(("192.0.2.1", 80))

def connect_outside_gateway_port(client, config):
    # The Landlock TCP rule allows the gateway's port on any host: the guard must not.
    connect(("192.0.2.1", client.base_url.port))

def udp_send(client, config):
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"labels?", ("192.0.2.1", 53))

def listen_for_outsiders(client, config):
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()

def resolve_outside(client, config):
    socket.getaddrinfo("labels.example.com", 443)

def healthy(client, config):
    pass

FAULTS = {name: function for name, function in globals().items() if callable(function)}
"""

# (behaviour in AGENT, injection, expected status, expected reason as a regular expression)
HARNESS_FAULTS = [
    ("tamper_with_neighbour", "harness tampers with a concurrent episode's scratch",
     "error", r"sandbox violation: read of /\S+/scratch denied \(\+2 more\) "
     r"\(the harness caught the refusal\)"),
    ("crash", "harness raises", "error", r"RuntimeError: harness bug"),
    ("sleep", "harness hangs in sleep", "timeout", r"episode exceeded 3s wall clock"),
    ("busy", "harness hangs in a busy loop", "timeout", r"episode exceeded 3s wall clock"),
    ("fork", "harness calls os.fork", "error", r"sandbox: process spawn \(os\.fork\) denied"),
    ("run_subprocess", "harness runs a subprocess", "error",
     r"sandbox: process spawn \(subprocess\.Popen\) of .*cat.* denied"),
    ("start_process", "harness starts a multiprocessing.Process", "error",
     r"sandbox: process spawn \(os\.fork\) denied"),
    ("allocate", "harness allocates 10 GB", "error", r"harness ran out of memory"),
    ("write_big_file", "harness writes 1 GB to one file", "error",
     r"episode wrote a file past its 16 MB file-size limit"),
    ("write_small_files", "harness writes 1 GB as 1 MB files", "error",
     r"episode wrote more than 48 MB to its scratch"),
    ("write_evaluator", "harness writes to the task's evaluator", "error",
     r"sandbox: write of {evaluator} denied"),
    ("write_reference", "harness overwrites the reference answers", "error",
     r"sandbox: write of {reference} denied"),
    ("read_labels", "harness reads the private labels", "error",
     r"sandbox: read of {labels} denied"),
    ("write_own_harness", "harness rewrites its own harness folder", "error",
     r"sandbox: write of /\S+/harness/agent\.py denied"),
]  # fmt: skip

NETWORK_FAULTS = [
    ("connect_outside", "harness connects outside", "error",
     r"sandbox: connect to '192\.0\.2\.1' \(only loopback\) denied"),
    ("connect_outside_gateway_port", "harness connects outside on the gateway's port", "error",
     r"sandbox: connect to '192\.0\.2\.1' \(only loopback\) denied"),
    ("udp_send", "harness sends a UDP datagram outside", "error",
     r"sandbox: send to '192\.0\.2\.1' \(only loopback\) denied"),
    ("listen_for_outsiders", "harness listens on 0.0.0.0", "error",
     r"sandbox: bind to '0\.0\.0\.0' \(only loopback\) denied"),
    ("resolve_outside", "harness resolves an outside name", "error",
     r"sandbox: name lookup of 'labels\.example\.com' \(only loopback\) denied"),
]  # fmt: skip

# Healthy episodes: the victim of the tamperer first, so that the two run at the same time.
HEALTHY = ["neighbour", "healthy", "healthy"]


@pytest.fixture
def recorder() -> Iterator[InMemoryRecorder]:
    with InMemoryRecorder() as ledger:
        yield ledger


@pytest.fixture
def task() -> tasks.Task:
    return tasks.get_task("arith", seed=0)


@pytest.fixture
def secrets(tmp_path: Path, task: tasks.Task) -> dict[str, str]:
    """The task's evaluator source, and private copies of its answers: labels, reference."""
    answers = {item_id: task.item(item_id).answer for item_id in task.item_ids("train")}
    private = tmp_path / "data" / "private"
    private.mkdir(parents=True)
    labels, reference = private / "labels.json", private / "reference.json"
    labels.write_text(json.dumps({**answers, "canary": CANARY}))
    reference.write_text(json.dumps(answers))
    evaluator = Path(inspect.getfile(type(task))).resolve()
    return {"evaluator": str(evaluator), "labels": str(labels), "reference": str(reference)}


def _digests(paths: dict[str, str]) -> dict[str, str]:
    return {
        name: hashlib.sha256(Path(path).read_bytes()).hexdigest() for name, path in paths.items()
    }


def _rollout(
    task: tasks.Task,
    recorder: InMemoryRecorder,
    secrets: dict[str, str],
    behaviours: list[str],
    run_id: str,
) -> tuple[dict[str, str], object]:
    """Run one rollout with one behaviour per item; the item of each behaviour, the result."""
    ids = task.item_ids("train")[: len(behaviours)]
    faults = dict(zip(ids, behaviours, strict=True))
    config = {"faults": faults, **secrets}
    harness = {"agent.py": AGENT.encode(), "harness.json": json.dumps(config).encode()}
    request = RolloutRequest(
        run_id=run_id,
        iteration=1,
        harness_commit="h1",
        harness=harness,
        adapter_tag=None,
        adapter_path=None,
        item_ids=tuple(ids),
        seed=11,
    )
    with (
        Gateway(ScriptedBackend(reply="7", delay_s=0.0)) as gateway,
        HarnessRunner(
            task,
            gateway,
            recorder,
            concurrency=4,
            episode_timeout=TIMEOUT_S,
            memory_mb=512,
            limits=LIMITS,
        ) as runner,
    ):
        result = runner.rollout(request)
    return faults, result


def _check(
    recorder: InMemoryRecorder,
    run_id: str,
    items: dict[str, str],
    table: list[tuple[str, str, str, str]],
    injections: dict[str, object],
    secrets: dict[str, str],
) -> None:
    """Account each injection against the recorded rows, then assert what each row says."""
    rows = recorder.read_episodes(run_id)
    keys = episode_keys(rows)
    by_behaviour = {behaviour: item for item, behaviour in items.items()}
    for behaviour, _, _, _ in table:
        item = by_behaviour[behaviour]
        expected = [(1, "rollout", "train", item)]
        injections[behaviour].account(*difference(expected, [k for k in keys if k[3] == item]))
    # Every episode of the rollout, faulty or not, is on record exactly once.
    assert difference([(1, "rollout", "train", item) for item in items], keys) == (0, 0)
    row_of = {row.item_id: row for row in rows}
    for behaviour, name, status, pattern in table:
        injection = injections[behaviour]
        assert (injection.lost, injection.duplicates) == (0, 0), name
        row = row_of[by_behaviour[behaviour]]
        reason = pattern.format(**{key: re.escape(value) for key, value in secrets.items()})
        assert (row.status, row.answer, row.reward) == (status, None, 0.0), (name, row.reason)
        assert re.fullmatch(reason, row.reason), (name, row.reason)
    for item, behaviour in items.items():
        if behaviour in HEALTHY:
            row = row_of[item]
            assert (row.status, row.reason, row.answer, row.n_calls) == ("ok", "", "7", 1), row
    assert CANARY not in repr(rows)


def test_harness_faults_fail_their_own_episode_only(
    faults, task: tasks.Task, recorder: InMemoryRecorder, secrets: dict[str, str]
) -> None:
    before = _digests(secrets)
    injections = {behaviour: faults.inject(name) for behaviour, name, _, _ in HARNESS_FAULTS}
    behaviours = [HARNESS_FAULTS[0][0], *HEALTHY, *(b for b, _, _, _ in HARNESS_FAULTS[1:])]
    items, result = _rollout(task, recorder, secrets, behaviours, "run-faults")

    _check(recorder, "run-faults", items, HARNESS_FAULTS, injections, secrets)
    assert result.failures == len(HARNESS_FAULTS)
    # Refused means untouched: the evaluator, the reference answers, the labels.
    assert _digests(secrets) == before
    # The model was called by the healthy episodes and by the tamperer, which swallowed its
    # refusals and carried on (recorded, and failed all the same); no other got that far.
    rows = {row.item_id: row for row in recorder.read_episodes("run-faults")}
    calling = [row for item, row in rows.items() if items[item] in (*HEALTHY, behaviours[0])]
    calls = recorder.read_calls("run-faults")
    assert sorted(call.episode_id for call in calls) == sorted(row.episode_id for row in calling)


@pytest.mark.parametrize("landlock", ["landlock", "guard-only"])
def test_outside_network_is_refused_with_and_without_landlock(
    faults,
    task: tasks.Task,
    recorder: InMemoryRecorder,
    secrets: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    landlock: str,
) -> None:
    if landlock == "guard-only":
        monkeypatch.setenv(LANDLOCK_SWITCH, "0")
    elif not landlock_available():
        pytest.skip("Landlock is not available on this kernel")
    assert landlock_available() == (landlock == "landlock")
    injections = {
        behaviour: faults.inject(f"{name} ({landlock})") for behaviour, name, _, _ in NETWORK_FAULTS
    }
    behaviours = [*(b for b, _, _, _ in NETWORK_FAULTS), "healthy"]
    items, result = _rollout(task, recorder, secrets, behaviours, f"run-net-{landlock}")

    _check(recorder, f"run-net-{landlock}", items, NETWORK_FAULTS, injections, secrets)
    assert result.failures == len(NETWORK_FAULTS)
