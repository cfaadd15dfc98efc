"""The Claude agents against an httpx ``MockTransport`` playing the Messages API: the tool
loop, its refusals and limits, the decision it records. No model, no network."""

import json

import httpx2
import pytest

from ledger.records import CallRow, EpisodeRow
from sia.agents.claude import ClaudeClient, ClaudeFeedbackAgent, ClaudeSettings
from sia.agents.claude.conversation import Conversation, Tool
from sia.agents.errors import AgentError
from sia.agents.validation import Verdict, static_problems
from sia.ports import FeedbackContext
from sia.trajectories import Trajectory
from statemachine import events as ev
from tests.agents.claude_fake import assistant_turns, message, text, tool_results, tool_use

HARNESS = {
    "agent.py": b"def solve(client, item, config):\n    return '1'\n",
    "harness.json": b'{\n  "max_tokens": 16\n}\n',
}


def client_for(brain, monkeypatch, **settings) -> tuple[ClaudeClient, list[dict]]:
    seen: list[dict] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        seen.append(body)
        content, stop = brain(body)
        return httpx2.Response(200, json=message(body, content, stop))

    monkeypatch.setenv("TEST_KEY", "k")
    http = httpx2.Client(transport=httpx2.MockTransport(handle))
    return ClaudeClient(ClaudeSettings(api_key_env="TEST_KEY", **settings), http_client=http), seen


def test_a_missing_key_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(AgentError, match=r"API key in \$NO_SUCH_KEY"):
        ClaudeClient(ClaudeSettings(api_key_env="NO_SUCH_KEY"))


def test_an_api_error_becomes_an_agent_error(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "k")

    def refuse(request):
        error = {"type": "invalid_request_error", "message": "tools: bad schema"}
        return httpx2.Response(400, json={"type": "error", "error": error})

    http = httpx2.Client(transport=httpx2.MockTransport(refuse))
    client = ClaudeClient(ClaudeSettings(api_key_env="TEST_KEY"), http_client=http)
    with pytest.raises(AgentError, match=r"Claude call failed: BadRequestError.*bad schema"):
        client.reply(system="s", messages=[{"role": "user", "content": "x"}], tools=[])


def _finish_tool(log: list) -> Tool:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    return Tool("finish", "done", schema, lambda p: log.append(int(p["x"])) or "ok", True)


def test_the_loop_returns_tool_errors_to_the_model_and_echoes_thinking(monkeypatch):
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig-123"}

    def brain(body):
        turn = assistant_turns(body)
        if turn == 0:
            return [thinking, tool_use("nope", {}, 0), tool_use("finish", {}, 0)], "tool_use"
        return [tool_use("finish", {"x": 3}, turn)], "tool_use"

    client, seen = client_for(brain, monkeypatch)
    log, events = [], []
    Conversation(
        client, agent="a", iteration=4, system="s", tools=[_finish_tool(log)], events=events
    ).run("go")
    assert log == [3]
    results = tool_results(seen[1])
    assert [r.get("is_error") for r in results] == [True, True]
    assert "no tool named 'nope'" in results[0]["content"]
    assert "bad input for finish: KeyError" in results[1]["content"]
    # The reply went back verbatim, thinking block and signature included.
    assert seen[1]["messages"][1]["content"][0] == thinking
    assert [(e.iteration, e.agent, e.tools) for e in events] == [
        (4, "a", ("nope", "finish")),
        (4, "a", ("finish",)),
    ]
    assert all(isinstance(e, ev.AgentCalled) and e.input_tokens > 0 for e in events)


def test_the_loop_gives_up_after_max_turns(monkeypatch):
    client, _ = client_for(lambda body: ([text("...")], "end_turn"), monkeypatch, max_turns=3)
    events: list = []
    conversation = Conversation(
        client, agent="a", iteration=1, system="s", tools=[_finish_tool([])], events=events
    )
    with pytest.raises(AgentError, match=r"no accepted answer in 3 replies.*finish"):
        conversation.run("go")
    assert len(events) == 3  # every reply was paid for, and is recorded


def _context(levers=("edit", "train")) -> FeedbackContext:
    rollout = ev.RolloutCompleted(
        iteration=2,
        harness_commit="c" * 40,
        adapter_tag=None,
        episodes=2,
        failures=0,
        mean_reward=0.5,
        metrics={"success_rate": 0.5, "parse_failure_rate": 0.0},
    )
    return FeedbackContext("run", 2, frozenset(levers), HARNESS, rollout, ())


def _trajectories(run_id, iteration):
    rows = []
    for n, reward in enumerate((1.0, 0.0)):
        episode = EpisodeRow(
            run_id, iteration, "rollout", "train", f"ep{n}", f"t{n}", reward, "ok", "", 1, 10.0
        )
        call = CallRow(
            run_id,
            iteration,
            f"ep{n}",
            0,
            0.0,
            "c" * 40,
            None,
            json.dumps({"messages": [{"role": "user", "content": f"q{n}"}]}),
            [1, 2],
            [3],
            [-0.5],
            "stop",
            5.0,
            completion_text=f"reply {n}",
        )
        rows.append(Trajectory(episode, (call,)))
    return rows


def _static_check(files, *, run_id, iteration):
    problems = static_problems(files)
    return Verdict(not problems, "import" if problems else "", "; ".join(problems))


def _agent(client):
    return ClaudeFeedbackAgent(
        client,
        trajectories=_trajectories,
        answers={"t0": "42", "t1": "7"},
        check=_static_check,
        algorithms={"grpo": "group-relative policy gradient", "dpo": "preference pairs"},
    )


def test_train_decision_with_its_evidence_and_refusals_on_the_way(monkeypatch):
    decide = {
        "lever": "train",
        "rationale": "Answers are well formed but wrong half the time.",
        "evidence": ["ep1 answered 8 for 7"],
        "alternatives": [
            {"lever": "edit", "score": 0.3, "why": "format is fine"},
            {"lever": "train", "score": 0.7, "why": "mixed rewards"},
        ],
        "expected_effect": "val up by a few points",
        "algorithm_reason": "binary rewards vary within groups",
    }

    def brain(body):
        turn = assistant_turns(body)
        script = [
            [tool_use("read_trajectory", {"episode_id": "ep1"}, 0)],
            [tool_use("read_trajectory", {"episode_id": "val-3"}, 1)],
            [tool_use("decide", {**decide, "lever": "edit"}, 2)],  # no patch yet
            [tool_use("decide", {**decide, "algorithm": "ppo"}, 3)],  # not on the menu
            [tool_use("decide", {**decide, "algorithm": "grpo"}, 4)],
        ]
        return script[turn], "tool_use"

    client, seen = client_for(brain, monkeypatch)
    agent = _agent(client)
    decision = agent.decide(_context())
    read = json.loads(tool_results(seen[1])[0]["content"])
    assert read["reference_answer"] == "7" and read["calls"][0]["completion"] == "reply 1"
    assert "logprobs" not in read["calls"][0]
    assert "no episode 'val-3'" in tool_results(seen[2])[0]["content"]
    assert "needs a patch" in tool_results(seen[3])[0]["content"]
    assert "one of grpo, dpo" in tool_results(seen[4])[0]["content"]
    assert decision.lever == "train" and decision.algorithm == "grpo"
    assert decision.algorithm_reason == "binary rewards vary within groups"
    assert decision.agent == "claude-feedback" and decision.edit is None
    assert decision.diagnostics["evidence"] == ["ep1 answered 8 for 7"]
    assert decision.diagnostics["trajectories_read"] == ["ep1"]
    assert decision.diagnostics["model"] == "claude-sonnet-5-5"
    assert [a["allowed"] for a in decision.alternatives] == [True, True]
    events = agent.take_events()
    assert len(events) == 5 and agent.take_events() == []


def test_patch_attempts_are_limited_and_each_rejection_is_an_event(monkeypatch):
    broken = "--- a/agent.py\n+++ b/agent.py\n@@ -1,2 +1,2 @@\n-def solve(client, item, config):\n"
    broken += "+def solve(client, item, config:\n     return '1'\n"

    def brain(body):
        turn = assistant_turns(body)
        if turn < 3:
            return [tool_use("propose_patch", {"diff": broken, "summary": "s"}, turn)], "tool_use"
        payload = {"lever": "edit", "rationale": "r", "alternatives": [], "expected_effect": "e"}
        return [tool_use("decide", payload, turn)], "tool_use"

    client, seen = client_for(brain, monkeypatch, max_patch_attempts=2, max_turns=4)
    agent = _agent(client)
    with pytest.raises(AgentError, match="no accepted answer in 4 replies"):
        agent.decide(_context(levers=("edit",)))
    assert "agent.py does not compile" in tool_results(seen[1])[0]["content"]
    assert "no patch attempts left" in tool_results(seen[3])[0]["content"]
    events = agent.take_events()
    rejected = [e for e in events if isinstance(e, ev.PatchRejected)]
    assert [(e.attempt, e.stage) for e in rejected] == [(1, "import"), (2, "import")]
    assert sum(isinstance(e, ev.AgentCalled) for e in events) == 4
