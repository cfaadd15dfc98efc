"""`sia run` with the Claude Meta and Feedback agents, end to end: the real anthropic SDK
talks to a loopback fake of the Messages API; the gateway, runner, ledger and harness repo
are real, on the tiny model.

The fake plays a Claude that makes mistakes on purpose: a harness that does not compile, a
patch whose context does not match, a patch that breaks the import, a patch whose smoke
episode crashes, a reply without a tool call, a lever the mode forbids. Each must be caught,
recorded and answered, and the run must end with the good patches committed.
"""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ledger import DuckDBRecorder
from sia.agents.claude.pricing import cost_usd
from sia.cli import cli
from sia.config import RunConfig
from sia.history import run_state
from sia.trajectories import read_trajectories
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.errors import ConfigError
from statemachine.replay import envelopes
from tasks import get_task
from tests.agents.claude_fake import (
    FakeClaude,
    assistant_turns,
    config_patch,
    decide_edit,
    result_of,
    text,
    tool_use,
)
from tests.support.canary import assert_nowhere

KEY = "sk-ant-test-9f3c2e7d1b4a-never-stored"
SEED = 5


def _template() -> dict[str, str]:
    return {path: data.decode() for path, data in get_task("arith").harness_template().items()}


def _meta(body: dict, turn: int):
    if turn == 0:
        files = {"agent.py": "def solve(client, item, config:\n", "harness.json": "{}"}
        return [tool_use("write_harness", {"files": files, "rationale": "draft"}, turn)]
    files = _template()
    config = json.loads(files["harness.json"])
    config["system_prompt"] = "You add two numbers and reply with the sum."
    files["harness.json"] = json.dumps(config, indent=2) + "\n"
    rationale = "Arith harness with a plain instruction\n\nThe template, told to reply with a sum."
    return [tool_use("write_harness", {"files": files, "rationale": rationale}, turn)]


def _feedback_first(body: dict, turn: int):
    if turn == 0:
        return [text("Reading the rollout."), tool_use("list_trajectories", {"limit": 5}, turn)]
    if turn == 1:
        listed = json.loads(result_of(body, "list_trajectories")["content"])
        episode = listed["episodes"][0]["episode_id"]
        return [
            tool_use("read_trajectory", {"episode_id": episode}, turn),
            tool_use("read_harness_file", {"path": "harness.json"}, turn),
        ]
    if turn == 2:  # written against a file that says something else: must not apply
        diff = config_patch(body, "max_tokens", 12).replace('"max_tokens"', '"max_tokenz"')
        return [tool_use("propose_patch", {"diff": diff, "summary": "stale"}, turn)]
    if turn == 3:  # applies, but does not compile
        diff = "--- /dev/null\n+++ b/helper.py\n@@ -0,0 +1 @@\n+def broken(:\n"
        return [tool_use("propose_patch", {"diff": diff, "summary": "helper"}, turn)]
    if turn == 4:
        diff = config_patch(body, "max_tokens", 12)
        return [tool_use("propose_patch", {"diff": diff, "summary": "Shorter replies"}, turn)]
    return decide_edit(turn, "Replies ramble past the answer; cap them.")


def _feedback_second(body: dict, turn: int):
    if turn == 0:
        return [text("Let me think about this.")]  # no tool: the agent is nudged
    if turn == 1:  # mode h allows no training: refused
        payload = {"lever": "train", "rationale": "x", "alternatives": [], "expected_effect": "y"}
        return [tool_use("decide", {**payload, "algorithm": "grpo"}, turn)]
    if turn == 2:
        return [tool_use("read_harness_file", {"path": "harness.json"}, turn)]
    if turn == 3:  # compiles, but its episode fails: smoke rejects it
        diff = config_patch(body, "extraction", "no_such_strategy")
        return [tool_use("propose_patch", {"diff": diff, "summary": "bad extraction"}, turn)]
    if turn == 4:
        diff = config_patch(body, "user_template", "Add {a} and {b}. The sum is")
        return [tool_use("propose_patch", {"diff": diff, "summary": "Reword the question"}, turn)]
    return decide_edit(turn, "Ask for the sum directly.")


def brain(body: dict):
    turn = assistant_turns(body)
    if body["system"].startswith("You are the Meta Agent"):
        return _meta(body, turn), "tool_use"
    iteration = int(re.search(r"Iteration (\d+)", body["messages"][0]["content"]).group(1))
    script = _feedback_first if iteration == 1 else _feedback_second
    content = script(body, turn)
    return content, "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"


@pytest.fixture(scope="module")
def claude_run(tmp_path_factory, tiny_model_dir):
    """One run, read by every test below."""
    ws = tmp_path_factory.mktemp("claude") / "ws"
    with pytest.MonkeyPatch.context() as patch, FakeClaude(brain) as fake:
        patch.setenv("SIA_TEST_CLAUDE_KEY", KEY)
        args = ["-w", str(ws), "run", "--mode", "h", "--policy", str(tiny_model_dir)]
        args += ["--iterations", "2", "--batch-size", "3", "--seed", str(SEED), "--run-id", "r"]
        args += ["--meta-agent", "claude", "--feedback-agent", "claude"]
        args += ["--agent-base-url", fake.url, "--agent-api-key-env", "SIA_TEST_CLAUDE_KEY"]
        out = CliRunner().invoke(cli, [*args, "--json"])
    assert out.exit_code == 0, out.output
    return ws, fake, out.output


def _events(ws: Path):
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        return [(e.seq, e.event) for e in envelopes(recorder.read("r"))]


@pytest.mark.slow
def test_claude_agents_drive_a_run_and_every_mistake_is_caught_and_recorded(claude_run):
    ws, _, _ = claude_run
    events = _events(ws)
    rejected = [e for _, e in events if isinstance(e, ev.PatchRejected)]
    assert [(e.iteration, e.agent, e.stage) for e in rejected] == [
        (0, "claude-meta", "import"),
        (1, "claude-feedback", "apply"),
        (1, "claude-feedback", "import"),
        (2, "claude-feedback", "smoke"),
    ]
    assert "+def solve(client, item, config:" in rejected[0].patch  # the harness it wrote
    assert "line" in rejected[1].reason and "max_tokenz" in rejected[1].patch
    assert "helper.py does not compile" in rejected[2].reason
    assert "no_such_strategy" in rejected[3].reason

    decisions = [e for _, e in events if isinstance(e, ev.DecisionMade)]
    assert [d.agent for d in decisions] == ["claude-feedback"] * 2
    assert all(d.lever == "edit" and d.edit["operator"] == "claude-patch" for d in decisions)
    assert decisions[0].diagnostics["trajectories_read"]
    assert decisions[0].diagnostics["patches_rejected"] == 2
    assert {a["lever"] for a in decisions[0].alternatives} == {"edit", "train"}

    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        state = run_state(recorder, "r")
        smokes = read_trajectories(recorder, "r", purpose="smoke")
    assert state.status == "done"
    # Every validated proposal ran one train episode: meta 1, iteration 1: 1, iteration 2: 2.
    assert len(smokes) == 4
    assert all(t.episode.split == "train" and t.calls for t in smokes)

    repo = Workspace.open(ws).repo()
    committed = [e for _, e in events if isinstance(e, ev.HarnessCommitted)]
    first = json.loads(repo.files_at(committed[0].commit)["harness.json"])
    assert first["system_prompt"] == "You add two numbers and reply with the sum."
    second = json.loads(repo.files_at(committed[1].commit)["harness.json"])
    assert second["max_tokens"] == 12
    third = json.loads(repo.files_at(committed[2].commit)["harness.json"])
    assert third["user_template"] == "Add {a} and {b}. The sum is"
    assert "helper.py" not in repo.files_at(committed[2].commit)


@pytest.mark.slow
def test_every_claude_call_is_recorded_with_its_usage_and_cost(claude_run):
    ws, fake, _ = claude_run
    calls = [e for _, e in _events(ws) if isinstance(e, ev.AgentCalled)]
    # One event per request the API received, in order, with the usage it returned.
    assert len(calls) == len(fake.requests) == 2 + 6 + 6
    for call, body in zip(calls, fake.requests, strict=True):
        assert call.model == body["model"] == "claude-sonnet-5-5"
        assert call.input_tokens == len(json.dumps(body)) // 4
        expected = cost_usd(call.model, call.input_tokens, call.output_tokens)
        assert call.cost_usd == pytest.approx(expected)
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        state = run_state(recorder, "r")
    assert state.agent_calls == len(calls)
    assert state.agent_cost_usd == pytest.approx(sum(c.cost_usd for c in calls))
    assert calls[0].agent == "claude-meta" and calls[-1].agent == "claude-feedback"
    assert calls[-1].tools == ("decide",)


@pytest.mark.slow
def test_the_api_key_is_sent_but_never_stored(claude_run):
    ws, fake, output = claude_run
    # The real path: the SDK sent the key from the environment on every request.
    assert {headers.get("authorization") for headers in fake.headers} == {f"Bearer {KEY}"}
    assert KEY not in output
    assert_nowhere(KEY, ws, "r", ws.parent / "outputs")


@pytest.mark.slow
def test_no_val_or_test_item_reaches_claude(claude_run):
    _, fake, _ = claude_run
    blob = json.dumps(fake.requests)
    task = get_task("arith", seed=SEED)
    train = [task.item(i) for i in task.item_ids("train")]
    train_questions = {item.prompt for item in train}
    assert any(item.id in blob for item in train)  # what it may see does show up
    # The one label an agent sees is a train item's reference answer, in read_trajectory.
    shown = [
        json.loads(block["content"])
        for body in fake.requests
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
        and not block.get("is_error")
        and '"reference_answer"' in block["content"]
    ]
    answers = {item.id: item.answer for item in train}
    assert shown and all(s["reference_answer"] == answers[s["item_id"]] for s in shown)
    for split in ("val", "test"):
        for item in (task.item(i) for i in task.item_ids(split)):
            assert item.id not in blob, f"{split} item {item.id} reached Claude"
            if item.prompt not in train_questions:
                assert item.prompt not in blob, f"{split} question {item.prompt!r} reached it"


@pytest.mark.slow
def test_sia_why_explains_a_claude_decision(claude_run):
    ws, _, _ = claude_run
    out = CliRunner().invoke(cli, ["-w", str(ws), "why", "r", "1", "--json"])
    assert out.exit_code == 0, out.output
    audit = json.loads(out.output)
    assert audit["decision"]["agent"] == "claude-feedback"
    assert audit["decision"]["patch"].startswith("--- a/harness.json")
    assert [r["stage"] for r in audit["rejected_patches"]] == ["apply", "import"]
    assert audit["agent_calls"]["calls"] == 6
    assert audit["agent_calls"]["cost_usd"] > 0
    assert audit["produced"]["changed_files"] == ["harness.json"]


def test_agent_names_are_validated():
    with pytest.raises(ConfigError, match="feedback_agent must be one of offline, claude"):
        RunConfig(feedback_agent="gpt")


def test_a_claude_run_without_its_key_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv("SIA_TEST_NO_KEY", raising=False)
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--feedback-agent", "claude"]
    out = CliRunner().invoke(cli, [*args, "--agent-api-key-env", "SIA_TEST_NO_KEY"])
    assert out.exit_code == 1
    assert out.output.strip() == (
        "Error: the claude agents need an Anthropic API key in $SIA_TEST_NO_KEY"
    )
    assert not ws.exists()
