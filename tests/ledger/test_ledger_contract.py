"""The recorder contract, run against the in-memory and the DuckDB backend alike."""

import itertools
import math

import pytest

from ledger import (
    GENESIS,
    CallRow,
    ConcurrencyConflict,
    DuplicateEvent,
    EpisodeRow,
    LedgerError,
    NewEvent,
    Recorder,
    RunNotFound,
    event_hash,
)

TS = 1_750_000_000.25


def events(*names: str) -> list[NewEvent]:
    return [NewEvent(name, 1, {"name": name, "i": i}) for i, name in enumerate(names)]


def seeded(recorder: Recorder, n: int = 6, run_id: str = "r1") -> None:
    recorder.append(run_id, events(*(f"e{i}" for i in range(1, n + 1))), expected_seq=0, ts=TS)


def call(episode: str, index: int, *, iteration: int = 0, run_id: str = "r1") -> CallRow:
    return CallRow(
        run_id=run_id,
        iteration=iteration,
        episode_id=episode,
        call_index=index,
        ts=TS + index,
        harness_commit="c0ffee" * 6 + "abcd",
        adapter_tag=None if index % 2 else "adapter-0001",
        messages_json='[{"role": "user", "content": "2+2=?"}]',
        prompt_ids=[1, 2, 3, 70000],
        completion_ids=[9, 8],
        logprobs=[-0.5, -1.125],
        finish_reason="stop",
        latency_ms=12.5,
        completion_text="4\u00e9",
        temperature=0.7,
        top_p=0.95,
    )


def episode(episode_id: str, *, iteration: int = 0, purpose: str = "rollout") -> EpisodeRow:
    return EpisodeRow(
        run_id="r1",
        iteration=iteration,
        purpose=purpose,
        split="train" if purpose == "rollout" else "val",
        episode_id=episode_id,
        item_id=f"item-{episode_id}",
        reward=None if episode_id.endswith("x") else 0.75,
        status="timeout" if episode_id.endswith("x") else "ok",
        reason="",
        n_calls=2,
        duration_ms=30.0,
    )


# ---- events ---------------------------------------------------------------------------------


def test_append_then_read_round_trips(recorder: Recorder) -> None:
    payload = {"nested": {"b": [1, 2.5, None, True], "a": "é✓"}, "big": 2**60, "f": 0.1}
    written = recorder.append(
        "r1", [NewEvent("run_started", 3, payload), NewEvent("x", 1, {})], expected_seq=0, ts=TS
    )
    assert written == recorder.read("r1")
    first = written[0]
    assert (first.run_id, first.seq, first.ts, first.type, first.version) == (
        "r1",
        1,
        TS,
        "run_started",
        3,
    )
    assert first.payload == payload


def test_seqs_continue_across_appends(recorder: Recorder) -> None:
    assert [e.seq for e in recorder.append("r1", events("a", "b"), expected_seq=0, ts=TS)] == [1, 2]
    assert [e.seq for e in recorder.append("r1", events("c", "d"), expected_seq=2, ts=TS)] == [3, 4]
    assert [e.type for e in recorder.read("r1")] == ["a", "b", "c", "d"]


def test_events_chain_from_genesis(recorder: Recorder) -> None:
    recorder.append("r1", events("a"), expected_seq=0, ts=TS)
    recorder.append("r1", events("b", "c"), expected_seq=1, ts=TS + 1)
    stored = recorder.read("r1")
    assert stored[0].prev_hash == GENESIS
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.hash
    for e in stored:
        assert e.hash == event_hash(
            e.prev_hash, e.run_id, e.seq, e.ts, e.type, e.version, e.payload
        )
    assert len({e.hash for e in stored}) == 3


def test_runs_are_separate_chains(recorder: Recorder) -> None:
    recorder.append("a", events("x"), expected_seq=0, ts=TS)
    recorder.append("b", events("x"), expected_seq=0, ts=TS)
    a, b = recorder.read("a")[0], recorder.read("b")[0]
    assert a.prev_hash == b.prev_hash == GENESIS
    assert a.hash != b.hash


def test_stale_expected_seq_conflicts_and_writes_nothing(recorder: Recorder) -> None:
    recorder.append("r1", events("a", "b"), expected_seq=0, ts=TS)
    before = recorder.head("r1")
    with pytest.raises(ConcurrencyConflict, match="at seq 2, but the append expected seq 1"):
        recorder.append("r1", events("c"), expected_seq=1, ts=TS)
    with pytest.raises(ConcurrencyConflict):
        recorder.append("new", events("c"), expected_seq=3, ts=TS)
    assert recorder.head("r1") == before
    assert recorder.head("new") is None
    assert len(recorder.read("r1")) == 2


def test_duplicate_seq_is_rejected_with_its_seq(recorder: Recorder, store) -> None:
    seeded(recorder, 5)
    # A head rewound past stored events is the only way an append can reach a taken seq.
    recorder = store.set_head("r1", 3)
    with pytest.raises(DuplicateEvent, match=r"run 'r1' already has an event at seq 4"):
        recorder.append("r1", events("again", "again2"), expected_seq=3, ts=TS)
    assert [e.seq for e in recorder.read("r1")] == [1, 2, 3, 4, 5]
    assert recorder.head("r1").seq == 3


def test_duplicate_first_event_when_head_is_lost(recorder: Recorder, store) -> None:
    seeded(recorder, 2)
    recorder = store.set_head("r1", None)
    with pytest.raises(DuplicateEvent, match="at seq 1"):
        recorder.append("r1", events("again"), expected_seq=0, ts=TS)


def test_large_batches_chain_and_reject_duplicates_alike(recorder: Recorder, store) -> None:
    batch = [NewEvent("tick", 1, {"n": n}) for n in range(100)]
    written = recorder.append("r1", batch, expected_seq=0, ts=TS)
    assert [e.seq for e in written] == list(range(1, 101))
    assert recorder.read("r1") == written
    assert recorder.verify("r1").ok
    recorder = store.set_head("r1", 60)
    with pytest.raises(DuplicateEvent, match="at seq 61"):
        recorder.append("r1", batch, expected_seq=60, ts=TS)
    assert len(recorder.read("r1")) == 100


def test_empty_append_is_a_no_op(recorder: Recorder) -> None:
    assert recorder.append("r1", [], expected_seq=0, ts=TS) == []
    assert recorder.head("r1") is None
    assert recorder.heads() == []


def test_heads_name_each_runs_last_event(recorder: Recorder) -> None:
    recorder.append("zeta", events("a", "b", "c"), expected_seq=0, ts=TS)
    last = recorder.append("alpha", events("a"), expected_seq=0, ts=TS + 5)[-1]
    heads = recorder.heads()
    assert [(h.run_id, h.seq) for h in heads] == [("alpha", 1), ("zeta", 3)]
    assert heads[0].hash == last.hash
    assert heads[0].ts == TS + 5
    assert recorder.head("zeta") == heads[1]
    assert recorder.head("nobody") is None


def test_read_after_seq(recorder: Recorder) -> None:
    seeded(recorder, 5)
    assert [e.seq for e in recorder.read("r1", after_seq=3)] == [4, 5]
    assert recorder.read("r1", after_seq=5) == []


def test_unknown_run(recorder: Recorder) -> None:
    with pytest.raises(RunNotFound, match="nobody"):
        recorder.read("nobody")
    assert recorder.read("nobody", after_seq=4) == []
    with pytest.raises(RunNotFound):
        recorder.verify("nobody")


def test_stored_payload_is_isolated_from_caller_objects(recorder: Recorder) -> None:
    payload = {"items": [1, 2]}
    written = recorder.append("r1", [NewEvent("a", 1, payload)], expected_seq=0, ts=TS)
    payload["items"].append(3)
    written[0].payload["items"].append(4)
    assert recorder.read("r1")[0].payload == {"items": [1, 2]}
    assert recorder.verify("r1").ok


@pytest.mark.parametrize(
    "payload", [{"t": {1, 2}}, {"nan": math.nan}, {"inf": [math.inf]}], ids=["set", "nan", "inf"]
)
def test_unencodable_payload_is_refused(recorder: Recorder, payload: dict) -> None:
    with pytest.raises(ValueError, match="payload is not JSON-encodable"):
        recorder.append("r1", [NewEvent("bad", 1, payload)], expected_seq=0, ts=TS)
    assert recorder.head("r1") is None


def test_bad_append_arguments(recorder: Recorder) -> None:
    with pytest.raises(ValueError):
        recorder.append("", events("a"), expected_seq=0, ts=TS)
    with pytest.raises(ValueError):
        recorder.append("r1", events("a"), expected_seq=-1, ts=TS)
    with pytest.raises(ValueError):
        recorder.append("r1", events("a"), expected_seq=0, ts=math.nan)


def test_closed_recorder_refuses_work(store) -> None:
    recorder = store.open()
    recorder.close()
    recorder.close()
    with pytest.raises(LedgerError, match="closed"):
        recorder.heads()
    with pytest.raises(LedgerError, match="closed"):
        recorder.append("r1", events("a"), expected_seq=0, ts=TS)


# ---- verification ---------------------------------------------------------------------------


def test_intact_run_verifies(recorder: Recorder) -> None:
    seeded(recorder, 4)
    report = recorder.verify("r1")
    assert report.ok
    assert (report.run_id, report.n_events, report.head_seq, report.problems) == ("r1", 4, 4, ())


def test_edited_payload_is_named_at_its_seq(recorder: Recorder, store) -> None:
    seeded(recorder, 6)
    report = store.edit_payload("r1", 3, {"name": "forged", "i": 2}).verify("r1")
    assert not report.ok
    assert [(p.seq, p.kind) for p in report.problems] == [(3, "hash_mismatch")]


def test_edit_with_recomputed_hash_breaks_the_next_link(recorder: Recorder, store) -> None:
    seeded(recorder, 6)
    report = store.edit_payload("r1", 3, {"forged": True}, rehash=True).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "broken_link")]


def test_edited_last_event_is_caught_by_the_head(recorder: Recorder, store) -> None:
    seeded(recorder, 4)
    report = store.edit_payload("r1", 4, {"forged": True}, rehash=True).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "head_mismatch")]


def test_deleted_middle_event_is_named(recorder: Recorder, store) -> None:
    seeded(recorder, 6)
    report = store.delete("r1", keep=lambda seq: seq != 4).verify("r1")
    assert report.problems[0].seq == 4
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "gap")]
    assert report.n_events == 5


def test_deleted_first_event_is_named(recorder: Recorder, store) -> None:
    seeded(recorder, 3)
    report = store.delete("r1", keep=lambda seq: seq != 1).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "bad_start")]


def test_duplicate_row_is_named(recorder: Recorder, store) -> None:
    seeded(recorder, 6)
    report = store.duplicate("r1", 2, {"forged": True}).verify("r1")
    assert report.problems[0].seq == 2
    assert "duplicate" in {p.kind for p in report.problems if p.seq == 2}
    assert report.n_events == 7


def test_truncated_tail_is_detected(recorder: Recorder, store) -> None:
    seeded(recorder, 6)
    report = store.delete("r1", keep=lambda seq: seq <= 4).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(5, "truncated")]
    assert report.head_seq == 6


def test_fully_truncated_run_is_detected(recorder: Recorder, store) -> None:
    seeded(recorder, 2)
    report = store.delete("r1", keep=lambda seq: False).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(1, "truncated")]


def test_events_beyond_the_head_are_detected(recorder: Recorder, store) -> None:
    seeded(recorder, 5)
    report = store.set_head("r1", 3).verify("r1")
    assert [(p.seq, p.kind) for p in report.problems] == [(4, "beyond_head")]


# ---- bulk rows ------------------------------------------------------------------------------


def test_calls_round_trip_with_lists(recorder: Recorder) -> None:
    rows = [call("ep-b", 1), call("ep-b", 0), call("ep-a", 0), call("ep-a", 0, iteration=1)]
    recorder.append_calls(rows)
    got = recorder.read_calls("r1")
    assert got == sorted(rows, key=lambda r: (r.iteration, r.episode_id, r.call_index))
    assert got[0].prompt_ids == [1, 2, 3, 70000]
    assert got[0].adapter_tag == "adapter-0001"
    assert got[2].adapter_tag is None
    assert recorder.read_calls("r1", iteration=1) == [rows[3]]
    assert recorder.read_calls("other") == []


def test_call_logprobs_come_back_at_float32_precision(recorder: Recorder) -> None:
    row = call("ep", 0)
    recorder.append_calls([CallRow(**{**_fields(row), "logprobs": [-0.1, -2.0]})])
    (got,) = recorder.read_calls("r1")
    assert got.logprobs[1] == -2.0
    assert got.logprobs[0] != -0.1
    assert got.logprobs[0] == pytest.approx(-0.1, rel=1e-7)


def test_calls_accumulate_across_appends(recorder: Recorder) -> None:
    recorder.append_calls([call("ep", 0)])
    recorder.append_calls([call("ep", 1), call("ep", 2)])
    recorder.append_calls([])
    assert [c.call_index for c in recorder.read_calls("r1")] == [0, 1, 2]


def test_episodes_round_trip_and_filter(recorder: Recorder) -> None:
    rows = [
        episode("e2"),
        episode("e1x"),
        episode("v1", purpose="eval"),
        episode("e1", iteration=1),
    ]
    recorder.append_episodes(rows)
    assert recorder.read_episodes("r1") == [rows[2], rows[1], rows[0], rows[3]]
    assert recorder.read_episodes("r1", purpose="eval") == [rows[2]]
    assert recorder.read_episodes("r1", iteration=1, purpose="rollout") == [rows[3]]
    assert recorder.read_episodes("r1")[1].reward is None


def test_episode_row_validates_its_enums() -> None:
    with pytest.raises(ValueError, match="purpose"):
        episode("e", purpose="train")
    with pytest.raises(ValueError, match="status"):
        EpisodeRow("r", 0, "eval", "val", "e", "i", 1.0, "crashed", "", 0, 0.0)


def _fields(row: CallRow) -> dict:
    return {name: getattr(row, name) for name in row.__dataclass_fields__}
