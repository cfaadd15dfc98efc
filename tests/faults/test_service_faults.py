"""Faults of the services a rollout leans on: the policy backend behind the gateway and a
SIA-format task's evaluator.

- The in-process model raises on some requests (as a CUDA error would).
- An OpenAI-compatible server (vLLM over HTTP, say) answers 500 or 503, or hangs past the
  episode's timeout: a loopback proxy injects these in front of a real gateway around the
  tiny model.
- The task's ``evaluate.py`` raises, hangs, exits non-zero, prints garbage or writes a
  metric that is not a number.

Each fault fails only the episodes it touches, with a clear reason; every episode of the
rollout comes back exactly once as an episode row; and the next rollout is served as usual.
Harness processes, gateways, model, runner and ledger are all real.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

import tasks
from ledger import DuckDBRecorder, EpisodeRow
from sia.gateway import EPISODE_HEADER, EpisodeTicket, Gateway
from sia.models.errors import GenerationError
from sia.models.generation import Generation, GenRequest
from sia.models.hf_backend import HFPolicy
from sia.models.openai_backend import OpenAIBackendConfig, OpenAIPolicy
from sia.models.tiny import build_tiny
from sia.ports import RolloutRequest
from sia.runner import HarnessRunner
from tasks.siadir import DirTask
from tests.faults.accounting import difference, episode_keys

SIA_TASK = Path(__file__).resolve().parents[1] / "support" / "sia_task"
RUN = "run-svc"
EPISODE_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def policy() -> HFPolicy:
    model, tokenizer = build_tiny(seed=0)
    return HFPolicy(model, tokenizer)


@pytest.fixture(scope="module")
def arith() -> tasks.Task:
    return tasks.get_task("arith", seed=0)


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[DuckDBRecorder]:
    with DuckDBRecorder(tmp_path / "ledger.duckdb") as ledger:
        yield ledger


def _rollout(
    runner: HarnessRunner, task: tasks.Task, iteration: int, ids: Sequence[str]
) -> RolloutRequest:
    request = RolloutRequest(
        run_id=RUN,
        iteration=iteration,
        harness_commit="h1",
        harness=task.harness_template(),
        adapter_tag=None,
        adapter_path=None,
        item_ids=tuple(ids),
        seed=7,
    )
    runner.rollout(request)
    return request


def _account(recorder: DuckDBRecorder, *requests: RolloutRequest) -> tuple[int, int]:
    """``(lost, duplicates)`` summed over the rollouts ``requests``."""
    counts = [_account_one(recorder, request) for request in requests]
    return sum(lost for lost, _ in counts), sum(dup for _, dup in counts)


def _account_one(recorder: DuckDBRecorder, request: RolloutRequest) -> tuple[int, int]:
    """Episodes of ``request`` without exactly one row, plus calls on record that their
    episode's row does not count (or that belong to no episode)."""
    rows = recorder.read_episodes(RUN, request.iteration, "rollout")
    expected = [(request.iteration, "rollout", "train", item) for item in request.item_ids]
    lost, duplicates = difference(expected, episode_keys(rows))
    calls = Counter(call.episode_id for call in recorder.read_calls(RUN, request.iteration))
    counted = {row.episode_id: row.n_calls for row in rows}
    call_lost, call_duplicates = difference(
        [e for e, n in counted.items() for _ in range(n)], list(calls.elements())
    )
    return lost + call_lost, duplicates + call_duplicates


def _by_item(recorder: DuckDBRecorder, iteration: int) -> dict[str, EpisodeRow]:
    return {row.item_id: row for row in recorder.read_episodes(RUN, iteration, "rollout")}


def _question(task: tasks.Task, item_id: str) -> str:
    return str(task.public_item(item_id)["question"])


# ---- the in-process model raises -------------------------------------------------------


class Poisoned:
    """The tiny model, except that a batch holding a poisoned question raises, as a model
    error (CUDA, say) fails the whole batch it happens in; everything else is delegated."""

    def __init__(self, inner: HFPolicy, poison: set[str]) -> None:
        self._inner = inner
        self.poison = poison
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self, requests: Sequence[GenRequest]) -> None:
        for request in requests:
            text = json.dumps(request.messages if request.messages is not None else request.prompt)
            if any(question in text for question in self.poison):
                self.raised += 1
                raise RuntimeError("injected: CUDA error: device-side assert triggered")

    def generate(self, requests: Sequence[GenRequest]) -> list[Generation]:
        self._check(requests)
        return self._inner.generate(requests)

    def generate_continuous(
        self,
        requests: Sequence[GenRequest],
        admit: Callable[[int], Sequence[GenRequest]],
        finished: Callable[[int, Generation | Exception], None],
    ) -> None:
        self._check(requests)

        def checked(room: int) -> Sequence[GenRequest]:
            offered = admit(room)
            self._check(offered)  # a request joining a running batch brings it down too
            return offered

        self._inner.generate_continuous(requests, checked, finished)


def test_a_model_error_fails_only_its_episodes_and_the_next_rollout_is_served(
    policy, arith, recorder, faults
):
    ids = list(arith.item_ids("train")[:6])
    poisoned = {ids[1], ids[4]}
    backend = Poisoned(policy, {_question(arith, i) for i in poisoned})
    injection = faults.inject("policy backend raises on 2 of 6 requests")
    with Gateway(backend, max_batch=8, batch_wait_ms=10) as gateway:
        runner = HarnessRunner(arith, gateway, recorder, concurrency=3)
        first = _rollout(runner, arith, 1, ids)
        backend.poison.clear()
        second = _rollout(runner, arith, 2, ids)
        runner.close()
    injection.account(*_account(recorder, first, second))
    assert (injection.lost, injection.duplicates) == (0, 0)

    rows = _by_item(recorder, 1)
    for item, row in rows.items():
        if item in poisoned:
            assert row.status == "error" and row.n_calls == 0, row
            assert row.reason == (
                "InternalServerError: Error code: 500 - "
                "RuntimeError: injected: CUDA error: device-side assert triggered"
            )
        else:
            assert (row.status, row.reason, row.n_calls) == ("ok", "", 1), row
    assert backend.raised >= 2  # each poisoned request failed its batch, then alone
    assert all(row.status == "ok" for row in _by_item(recorder, 2).values())


# ---- an OpenAI-compatible server fails or hangs ----------------------------------------


class FaultyUpstream:
    """A loopback proxy in front of an OpenAI-compatible server, injecting faults.

    A request whose messages hold one of ``questions`` that ``faults`` names is answered
    with that fault: ``"500"`` and ``"503"`` (with ``retry-after: 0``) error bodies,
    ``"hang"`` no answer until :meth:`close`. Every other request is forwarded. ``hits``
    counts the requests seen per question.
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.questions: list[str] = []
        self.faults: dict[str, str] = {}
        self.hits: Counter[str] = Counter()
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._http = httpx2.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                text = json.dumps(json.loads(raw).get("messages"))
                question = next((q for q in proxy.questions if q in text), text)
                with proxy._lock:
                    proxy.hits[question] += 1
                    fault = proxy.faults.get(question)
                if fault == "hang":
                    proxy._released.wait(60)
                    return  # the connection closes without an answer
                if fault in ("500", "503"):
                    body = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
                    self._send(int(fault), body, {"retry-after": "0"} if fault == "503" else {})
                    return
                headers = {EPISODE_HEADER: self.headers[EPISODE_HEADER]}
                path = self.path.removeprefix("/v1")
                answer = proxy._http.post(proxy.target + path, content=raw, headers=headers)
                self._send(answer.status_code, answer.content, {})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@pytest.fixture
def upstream(policy: HFPolicy) -> Iterator[tuple[FaultyUpstream, str]]:
    """The proxy in front of a real gateway around the tiny model, and its episode token."""
    ticket = EpisodeTicket("run-up", 0, "ep-up", "c0ffee", None, max_calls=10**6)
    with Gateway(policy, max_batch=8, batch_wait_ms=10) as server:
        token = server.register_episode(ticket)
        proxy = FaultyUpstream(server.base_url)
        try:
            yield proxy, token
        finally:
            proxy.close()


def _remote(proxy: FaultyUpstream, token: str, timeout_s: float) -> OpenAIPolicy:
    config = OpenAIBackendConfig(
        base_url=proxy.base_url,
        model="policy",
        api_key_env="SIA_TEST_UNSET_KEY",
        headers={EPISODE_HEADER: token},
        max_retries=2,
        backoff_s=0.05,
        timeout_s=timeout_s,
    )
    return OpenAIPolicy(config)


CHAT = "What is {} + 1?"


@pytest.mark.parametrize(
    ("fault", "requests", "message"),
    [
        ("500", 3, r"answered HTTP 500: injected 500 \(after 3 tries\)"),
        ("503", 3, r"answered HTTP 503: injected 503 \(after 3 tries\)"),
        ("hang", 1, r"no answer within 1.5 s"),
    ],
)
def test_the_openai_backend_retries_then_raises_one_clear_line(
    upstream, faults, fault, requests, message, monkeypatch
):
    proxy, token = upstream
    monkeypatch.delenv("SIA_TEST_UNSET_KEY", raising=False)
    questions = [CHAT.format(n) for n in range(4)]
    proxy.questions = questions
    proxy.faults = {questions[2]: fault}
    injection = faults.inject(f"OpenAI-compatible server: {fault}")
    asked = [GenRequest(messages=[{"role": "user", "content": q}], max_tokens=4) for q in questions]
    results: list[tuple[int, Generation | Exception]] = []
    with _remote(proxy, token, timeout_s=1.5) as remote:
        remote.generate_continuous(asked, lambda room: [], lambda i, r: results.append((i, r)))
        with pytest.raises(GenerationError, match=message) as caught:
            remote.generate(asked[2:3])
    # Each request came back exactly once, in its own time; none was sent twice needlessly.
    injection.account(*difference(range(len(asked)), [index for index, _ in results]))
    assert (injection.lost, injection.duplicates) == (0, 0)
    outcome = dict(results)
    assert isinstance(outcome[2], GenerationError)
    assert all(isinstance(outcome[i], Generation) for i in (0, 1, 3))
    if fault == "hang":
        assert [index for index, _ in results][-1] == 2  # the others did not wait for it
    assert "\n" not in str(caught.value)
    assert proxy.hits[questions[2]] == 2 * requests  # generate_continuous, then generate
    assert [proxy.hits[q] for q in (questions[0], questions[1], questions[3])] == [1, 1, 1]


def test_a_failing_or_hanging_server_fails_only_its_episodes(
    upstream, arith, recorder, faults, monkeypatch
):
    proxy, token = upstream
    monkeypatch.delenv("SIA_TEST_UNSET_KEY", raising=False)
    ids = list(arith.item_ids("train")[:6])
    proxy.questions = [_question(arith, i) for i in ids]
    kinds = {ids[0]: "hang", ids[2]: "500", ids[4]: "503"}
    proxy.faults = {_question(arith, i): kind for i, kind in kinds.items()}
    injection = faults.inject("OpenAI-compatible server: 500, 503 and a hang in one rollout")
    # The hung call is given up on after the episode's own timeout.
    with (
        _remote(proxy, token, timeout_s=EPISODE_TIMEOUT_S + 2) as remote,
        Gateway(remote, max_batch=8, batch_wait_ms=10) as gateway,
    ):
        runner = HarnessRunner(
            arith, gateway, recorder, concurrency=6, episode_timeout=EPISODE_TIMEOUT_S
        )
        first = _rollout(runner, arith, 1, ids)
        proxy.faults.clear()
        second = _rollout(runner, arith, 2, ids)
        runner.close()
    injection.account(*_account(recorder, first, second))
    assert (injection.lost, injection.duplicates) == (0, 0)

    rows = _by_item(recorder, 1)
    hang, error_500, error_503 = (rows[i] for i in (ids[0], ids[2], ids[4]))
    assert hang.status == "timeout" and hang.n_calls == 0
    for row, status in ((error_500, 500), (error_503, 503)):
        assert row.status == "error" and row.n_calls == 0
        assert f"answered HTTP {status}: injected {status} (after 3 tries)" in row.reason
    # The hang held back no other episode: its batch-mates finished within their timeout.
    healthy = [rows[i] for i in ids if i not in kinds]
    assert [(r.status, r.n_calls) for r in healthy] == [("ok", 1)] * 3
    assert all(row.status == "ok" for row in _by_item(recorder, 2).values())
    questions = {i: _question(arith, i) for i in ids}
    # Once per rollout for a healthy item (nothing sent again); retries for the failing.
    assert [proxy.hits[questions[i]] for i in ids] == [1 + 1, 2, 3 + 1, 2, 3 + 1, 2]


# ---- the task's evaluator fails --------------------------------------------------------

BROKEN_EVALUATOR = """
MODES = json.loads({modes!r})
PIDFILE = {pidfile!r}


def misbehave(mode, gen_dir):
    if mode == "raise":
        raise RuntimeError("evaluator bug")
    if mode == "hang":  # and leaves a child behind, which must die with it
        child = subprocess.Popen(["sleep", "300"])
        Path(PIDFILE).write_text(str(child.pid))
        time.sleep(300)
    if mode == "exit":
        print("giving up on this one", file=sys.stderr)
        sys.exit(3)
    if mode == "garbage":
        noise = bytes(range(256)) * 40_000  # 10 MB on each stream, then a broken file
        sys.stdout.buffer.write(noise)
        sys.stderr.buffer.write(noise)
        (gen_dir / "results.json").write_bytes(noise[:1000])
        sys.exit(0)
    if mode == "not-a-number":
        (gen_dir / "results.json").write_text(json.dumps({{"accuracy": "high"}}))
        sys.exit(0)


def main():
"""


def _broken_task(root: Path, modes: dict[str, str], pidfile: Path) -> DirTask:
    task_dir = Path(shutil.copytree(SIA_TASK, root / "sums"))
    evaluator = task_dir / "data" / "public" / "evaluate.py"
    source = evaluator.read_text()
    source = source.replace(
        "import argparse\n", "import argparse\nimport subprocess\nimport sys\nimport time\n"
    )
    source = source.replace(
        "\n\ndef main():\n", BROKEN_EVALUATOR.format(modes=json.dumps(modes), pidfile=str(pidfile))
    )
    source = source.replace(
        "    submitted = json.loads(",
        "    misbehave(MODES.get(next(iter(truth))), args.gen_dir)\n    submitted = json.loads(",
    )
    evaluator.write_text(source)
    (task_dir / "sia-task.json").write_text(json.dumps({"timeout_s": 2}))
    return DirTask(task_dir, seed=0)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped by its new parent


def test_a_failing_evaluator_fails_only_its_episodes_with_the_reason_recorded(
    tmp_path, policy, recorder, faults
):
    pidfile = tmp_path / "evaluator-child.pid"
    probe = DirTask(SIA_TASK, seed=0)
    ids = list(probe.item_ids("train"))
    kinds = ["raise", "hang", "exit", "garbage", "not-a-number"]
    modes = dict(zip(ids, kinds, strict=False))
    task = _broken_task(tmp_path, modes, pidfile)
    injection = faults.inject("task evaluator raises, hangs, exits 3, garbage, non-number")
    with Gateway(policy, max_batch=8, batch_wait_ms=10) as gateway:
        runner = HarnessRunner(task, gateway, recorder, concurrency=4)
        first = _rollout(runner, task, 1, ids)
        runner.close()
    injection.account(*_account(recorder, first))
    assert (injection.lost, injection.duplicates) == (0, 0)

    rows = _by_item(recorder, 1)
    details = {item: json.loads(row.reward_detail) for item, row in rows.items()}
    reasons = {modes[item]: details[item]["reason"] for item in modes}
    assert reasons == {
        "raise": "evaluator: exited 1: RuntimeError: evaluator bug",
        "hang": "evaluator: no result within 2s",
        "exit": "evaluator: exited 3: giving up on this one",
        "garbage": reasons["garbage"],
        "not-a-number": "evaluator: results.json metric accuracy='high' (scale 1) is not a "
        'number in [0, 1]; set its scale in sia-task.json: {"metric_scale": 0.01}',
    }
    assert reasons["garbage"].startswith("evaluator: results.json is not JSON (")
    assert all("\n" not in reason for reason in reasons.values())
    for item, row in rows.items():
        # The episode itself went well: the evaluator's failure is in its reward detail.
        assert (row.status, row.n_calls) == ("ok", 1), row
        if item in modes:
            assert row.reward == 0.0 and details[item]["metric"] is None
        else:
            assert details[item]["metric"] == row.reward and not details[item]["reason"]
    assert not _running(int(pidfile.read_text()))  # the hung evaluator's child died with it
