import dataclasses

import pytest

from statemachine import events as ev
from statemachine.codec import UPCASTERS, decode, encode
from statemachine.errors import InvalidEvent
from tests.support.scripted import simulate


def test_every_event_type_round_trips():
    envs = simulate("r", iterations=8)
    seen = set()
    for env in envs:
        name, version, payload = encode(env.event)
        assert decode(name, version, payload) == env.event
        seen.add(name)
    more = [
        ev.AgentCalled(
            iteration=1,
            agent="claude-feedback",
            model="m",
            input_tokens=10,
            output_tokens=2,
            cost_usd=None,
            tools=("decide",),
        ),
        ev.PatchRejected(
            iteration=1, agent="a", attempt=1, stage="apply", reason="r", patch="--- a/x"
        ),
        ev.RunResumed(pid=1, reconciled=("adopted x",)),
        ev.RunInterrupted(phase="ROLLOUT", iteration=2, step="RunRollout", signal="SIGINT"),
        ev.RunFailed(phase="PLAN", error="x"),
        ev.RunBranched(
            parent_run="a",
            parent_seq=3,
            at_iteration=1,
            task="t",
            mode="h",
            seed=0,
            harness_commit="c",
            adapter_tag=None,
            best_score=0.1,
        ),
    ]
    for event in more:
        assert decode(*encode(event)) == event
        seen.add(type(event).__name__)
    assert seen == set(ev.EVENT_TYPES)


def test_payload_is_plain_json_types():
    _, _, payload = encode(ev.BatchPlanned(iteration=1, item_ids=("a", "b"), seed=3))
    assert payload == {"iteration": 1, "item_ids": ["a", "b"], "seed": 3}


def test_unknown_type_and_newer_version_are_refused():
    with pytest.raises(InvalidEvent, match="unknown event type"):
        decode("RunExploded", 1, {})
    with pytest.raises(InvalidEvent, match="newer"):
        decode("RunFailed", 9, {"phase": "PLAN", "error": "x"})
    with pytest.raises(InvalidEvent, match="does not fit"):
        decode("RunFailed", 1, {"phase": "PLAN"})


def test_old_shapes_are_upcast_on_load(monkeypatch):
    # Pretend RunFailed moved to v2, where "error" was renamed from "message".
    monkeypatch.setattr(ev.RunFailed, "version", 2)
    monkeypatch.setitem(
        UPCASTERS, ("RunFailed", 1), lambda p: {"phase": p["phase"], "error": p["message"]}
    )
    event = decode("RunFailed", 1, {"phase": "EVAL", "message": "disk full"})
    assert event == ev.RunFailed(phase="EVAL", error="disk full")
    assert encode(event)[1] == 2


def test_events_are_frozen():
    event = ev.RunFailed(phase="PLAN", error="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.error = "y"
