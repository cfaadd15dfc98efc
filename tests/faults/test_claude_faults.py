"""Faults of the Claude API: rate limits, overload and server errors, retried with backoff;
an outage that outlasts the retries stops the run with one line, and `sia resume` finishes
it once the API is back.

The real ``anthropic`` SDK talks to the loopback fake of the Messages API
(``tests.agents.claude_fake``), which scripts the failures and notes when each request
arrived. The SDK waits what ``retry-after-ms`` or ``retry-after`` says, else
``0.5 * 2**n`` seconds times a jitter in [0.75, 1] (``anthropic._base_client``), so waits
are checked against those lower bounds only: a busy machine makes them longer, never
shorter.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sia.agents.claude import ClaudeClient, ClaudeSettings
from sia.agents.errors import AgentError
from sia.cli import cli
from sia.history import run_state
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.replay import envelopes
from tasks import get_task
from tests.agents.claude_fake import (
    Failure,
    FakeClaude,
    assistant_turns,
    config_patch,
    decide_edit,
    overloaded,
    rate_limited,
    server_error,
    text,
    tool_use,
    usage_for,
)
from tests.faults.accounting import difference, run_loss
from tests.support.any_number import registered

KEY = "sk-ant-fault-5e1d0c9b8a7f-never-shown"
KEY_ENV = "SIA_TEST_CLAUDE_FAULT_KEY"
#: The SDK's first backoff before jitter, and the jitter's lowest factor.
FIRST_WAIT_S, JITTER_LOW = 0.5, 0.75


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClaude]:
    monkeypatch.setenv(KEY_ENV, KEY)

    def brain(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        return [text(f"echo: {body['messages'][-1]['content']}")], "end_turn"

    with FakeClaude(brain) as running:
        yield running


def _client(fake: FakeClaude, max_retries: int) -> ClaudeClient:
    settings = ClaudeSettings(api_key_env=KEY_ENV, base_url=fake.url, max_retries=max_retries)
    return ClaudeClient(settings)


def _ask(client: ClaudeClient, question: str) -> str:
    reply = client.reply(system="s", messages=[{"role": "user", "content": question}], tools=[])
    return reply.text


def _gaps(fake: FakeClaude) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(fake.arrivals)]


def _paid_once(fake: FakeClaude, asked: list[str], received: list[str]) -> tuple[int, int]:
    """``(lost, duplicates)``: questions answered by the API but not returned to the caller,
    and questions the API answered (and billed) more than once."""
    billed = [body["messages"][-1]["content"] for body in fake.answered()]
    lost, _ = difference(billed, [r.removeprefix("echo: ") for r in received])
    _, duplicates = difference(asked, billed)
    return lost, duplicates


@pytest.mark.parametrize(
    ("header", "value", "wait_s"),
    [("retry-after", "1", 1.0), ("retry-after-ms", "800", 0.8)],
)
def test_a_429_waits_what_retry_after_says_then_succeeds(fake, faults, header, value, wait_s):
    injection = faults.inject(f"Claude API 429 with {header}: {value}")
    fake.fail_next(rate_limited(headers={header: value}))
    answer = _ask(_client(fake, max_retries=2), "q429")
    injection.account(*_paid_once(fake, ["q429"], [answer]))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert answer == "echo: q429"
    assert fake.statuses == [429, 200]
    # Above the SDK's own first backoff (at most 0.5 s): the header was honoured.
    assert _gaps(fake)[0] >= wait_s > FIRST_WAIT_S
    print(f"429 {header}={value}: waited {_gaps(fake)[0]:.3f} s")


@pytest.mark.parametrize("failure", [overloaded(), server_error()], ids=["529", "500"])
def test_overload_and_server_errors_are_retried_with_growing_waits(fake, faults, failure):
    injection = faults.inject(f"Claude API {failure.status} twice, then healthy")
    fake.fail_next(failure, failure)
    answer = _ask(_client(fake, max_retries=2), "q5xx")
    injection.account(*_paid_once(fake, ["q5xx"], [answer]))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert answer == "echo: q5xx"
    assert fake.statuses == [failure.status, failure.status, 200]
    first, second = _gaps(fake)
    # Each wait is at least its backoff's floor, and the floors double.
    assert first >= FIRST_WAIT_S * JITTER_LOW
    assert second >= 2 * FIRST_WAIT_S * JITTER_LOW > FIRST_WAIT_S
    print(f"{failure.status}: waits {first:.3f} s, {second:.3f} s")


@pytest.mark.parametrize(
    ("failure", "max_retries"),
    [
        (rate_limited(headers={"retry-after-ms": "30"}), 3),
        (overloaded(), 2),
        (server_error(), 1),
        (overloaded(), 0),
    ],
    ids=["429", "529", "500", "529-no-retries"],
)
def test_a_persistent_failure_is_one_line_naming_the_status(fake, faults, failure, max_retries):
    injection = faults.inject(f"Claude API {failure.status} persistently")
    fake.outage = lambda body: failure
    with pytest.raises(AgentError) as caught:
        _ask(_client(fake, max_retries=max_retries), "never")
    injection.account(*_paid_once(fake, ["never"], []))
    assert (injection.lost, injection.duplicates) == (0, 0)
    message = str(caught.value)
    tries = max_retries + 1
    assert len(fake.requests) == tries
    assert "\n" not in message
    assert re.fullmatch(
        rf"Claude call failed: \w+Error \(HTTP {failure.status}\): {failure.message} "
        rf"\(after {tries} requests\)",
        message,
    ), message


def test_an_unreachable_api_is_one_line_after_its_retries(faults, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    injection = faults.inject("Claude API unreachable")
    settings = ClaudeSettings(api_key_env=KEY_ENV, base_url=url, max_retries=1)
    with pytest.raises(AgentError) as caught:
        _ask(ClaudeClient(settings), "anyone?")
    injection.account(0, 0)  # nothing reached an API, so nothing was billed or returned
    assert re.fullmatch(
        r"Claude call failed: APIConnectionError: Connection to 127\.0\.0\.1:\d+ failed: "
        r"\[Errno 111\] Connection refused \(after 2 requests\)",
        str(caught.value),
    ), caught.value


@pytest.mark.parametrize(
    "failure",
    [
        Failure(401, "authentication_error", f"invalid x-api-key: {KEY}"),
        server_error(f"upstream said:\n  key {KEY} is over quota"),
    ],
    ids=["401", "500"],
)
def test_an_api_key_echoed_by_the_server_is_redacted(fake, faults, failure, caplog):
    injection = faults.inject(f"Claude API {failure.status} echoing the API key")
    fake.outage = lambda body: failure
    with caplog.at_level("DEBUG"), pytest.raises(AgentError) as caught:
        _ask(_client(fake, max_retries=1), "k")
    injection.account(*_paid_once(fake, ["k"], []))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert {h["authorization"] for h in fake.headers} == {f"Bearer {KEY}"}  # it was sent
    message = str(caught.value)
    assert KEY not in message and "[redacted]" in message and "\n" not in message
    assert KEY not in repr(caught.value.args)
    assert KEY not in caplog.text  # nor in what the SDK logs
    # 401 is not retried; 500 is.
    assert len(fake.requests) == (1 if failure.status == 401 else 2)


def test_max_retries_is_a_validated_setting_with_help():
    assert ClaudeSettings().max_retries == 5
    help_text = {f.name: f.metadata.get("help") for f in fields(ClaudeSettings)}
    assert "retry-after" in help_text["max_retries"]
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(AgentError, match="max_retries must be"):
            ClaudeSettings(max_retries=bad)  # type: ignore[arg-type]


# ---- a run whose Feedback Agent meets an outage ----------------------------------------

SEED = 3
FAILING_ITERATION, FAILING_TURN = 2, 1


def _iteration(body: dict[str, Any]) -> int | None:
    """The iteration a Feedback Agent request belongs to (``None`` for the Meta Agent)."""
    if body["system"].startswith("You are the Meta Agent"):
        return None
    return int(re.search(r"Iteration (\d+)", body["messages"][0]["content"]).group(1))


def _brain(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A Claude that gets everything right the first time: the run's path is fixed."""
    turn, iteration = assistant_turns(body), _iteration(body)
    if iteration is None:
        files = {p: d.decode() for p, d in get_task("arith").harness_template().items()}
        draft = {"files": files, "rationale": "The arith template\n\nAs it ships."}
        return [tool_use("write_harness", draft, turn)], "tool_use"
    if turn == 0:
        return [tool_use("read_harness_file", {"path": "harness.json"}, turn)], "tool_use"
    if turn == 1:
        diff = config_patch(body, "max_tokens", 8 + iteration)
        return [tool_use("propose_patch", {"diff": diff, "summary": "cap"}, turn)], "tool_use"
    return decide_edit(turn, f"Cap replies at {8 + iteration} tokens."), "tool_use"


def _outage(body: dict[str, Any]) -> Failure | None:
    """529 for iteration 2's Feedback Agent from its second call on, echoing the key."""
    if _iteration(body) == FAILING_ITERATION and assistant_turns(body) >= FAILING_TURN:
        # retry-after-ms keeps the test fast; the SDK's own backoff is tested above.
        return overloaded(f"Overloaded (key {KEY})", {"retry-after-ms": "20"})
    return None


def _call_key(body: dict[str, Any]) -> tuple[int, int]:
    """A billed call as its ``AgentCalled`` records it: iteration and input tokens (which
    the fake derives from the request, so each turn of a conversation has its own)."""
    return _iteration(body) or 0, usage_for(body, [])["input_tokens"]


def _sia(ws: Path, *args: str) -> Result:
    with registered():
        return CliRunner().invoke(cli, ["-w", str(ws), *args])


def _run(ws: Path, fake: FakeClaude, policy: Path) -> Result:
    args = ["run", "--task", "any-number", "--mode", "h", "--policy", str(policy)]
    args += ["--iterations", "2", "--batch-size", "2", "--seed", str(SEED), "--run-id", "r"]
    args += ["--meta-agent", "claude", "--feedback-agent", "claude", "--quiet"]
    args += ["--agent-base-url", fake.url, "--agent-api-key-env", KEY_ENV]
    return _sia(ws, *args)


def _events(ws: Path) -> list[ev.Event]:
    with Workspace.open(ws).reader() as rec:
        return [e.event for e in envelopes(rec.read("r"))]


def test_a_claude_outage_mid_run_stops_it_with_one_line_and_resume_finishes_it(
    tmp_path, tiny_model_dir, monkeypatch, faults
):
    monkeypatch.setenv(KEY_ENV, KEY)
    undisturbed, disturbed = tmp_path / "calm", tmp_path / "stormy"
    with FakeClaude(_brain) as calm:
        out = _run(undisturbed, calm, tiny_model_dir)
    assert out.exit_code == 0, out.output

    injection = faults.inject("Claude API 529 overloaded during FEEDBACK of iteration 2")
    with FakeClaude(_brain) as stormy:
        stormy.outage = _outage
        out = _run(disturbed, stormy, tiny_model_dir)
        assert out.exit_code == 1
        lines = out.output.strip().splitlines()
        assert len(lines) == 1, out.output
        assert re.fullmatch(
            r"Error: Claude call failed: OverloadedError \(HTTP 529\): Overloaded "
            r"\(key \[redacted\]\) \(after 6 requests\)",
            lines[0],
        ), lines[0]
        failed_at = len(stormy.requests)
        # The outage met the default retries: one call answered, then 1 + 5 tries.
        assert stormy.statuses[-6:] == [529] * 6 and stormy.statuses[-7] == 200
        verified = _sia(disturbed, "verify", "r")
        assert verified.exit_code == 0, verified.output
        with Workspace.open(disturbed).reader() as rec:
            assert run_state(rec, "r").status == "running"
        # What was paid for before the outage is on record, even though the step failed.
        calls = [e for e in _events(disturbed) if isinstance(e, ev.AgentCalled)]
        assert len(calls) == len(stormy.answered())

        stormy.outage = None  # the API is healthy again
        resumed = _sia(disturbed, "resume", "r")
        assert resumed.exit_code == 0, resumed.output
        billed = [_call_key(body) for body in stormy.answered()]
        print(f"outage: {failed_at} requests before the stop, {len(stormy.requests)} in all")

    with Workspace.open(undisturbed).reader() as rec:
        expected = envelopes(rec.read("r"))
    with Workspace.open(disturbed).reader() as rec:
        lost, duplicates = run_loss(rec, "r", expected)
        state = run_state(rec, "r")
    # Every call the API answered is recorded once: none lost, none counted twice.
    calls = [e for e in _events(disturbed) if isinstance(e, ev.AgentCalled)]
    call_lost, call_duplicates = difference(billed, [(c.iteration, c.input_tokens) for c in calls])
    injection.account(lost + call_lost, duplicates + call_duplicates)
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert state.status == "done"
    assert _sia(disturbed, "verify", "r").exit_code == 0
    decisions = [e for e in _events(disturbed) if isinstance(e, ev.DecisionMade)]
    assert [d.iteration for d in decisions] == [1, 2]
    for path in disturbed.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in out.output and KEY not in resumed.output
    assert json.dumps(stormy.requests).count(KEY) == 0  # the key travels in headers only
