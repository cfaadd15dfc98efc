"""The committed golden history replays to its committed timeline, and is reproduced."""

import dataclasses
import json

from ledger import DuckDBRecorder, EventRecord, NewEvent, RunHead, verify_chain
from statemachine.replay import replay, timeline
from tests.golden.make_golden import EVENTS, TIMELINE, record_run


def load_golden() -> list[EventRecord]:
    return [EventRecord(**json.loads(line)) for line in EVENTS.read_text().splitlines()]


def test_golden_ledger_replays_to_known_timeline():
    records = load_golden()
    last = records[-1]
    head = RunHead("golden", last.seq, last.hash, last.ts)
    assert verify_chain("golden", records, head) == []
    assert timeline(replay("golden", records)) == json.loads(TIMELINE.read_text())


def test_golden_history_survives_a_duckdb_round_trip(tmp_path):
    records = load_golden()
    with DuckDBRecorder(tmp_path / "ledger.duckdb") as rec:
        stored = rec.append(
            "golden",
            [NewEvent(r.type, r.version, r.payload) for r in records[:1]],
            expected_seq=0,
            ts=records[0].ts,
        )
        for r in records[1:]:
            stored += rec.append(
                "golden", [NewEvent(r.type, r.version, r.payload)], expected_seq=r.seq - 1, ts=r.ts
            )
        assert rec.verify("golden").ok
    assert [s.hash for s in stored] == [r.hash for r in records]


def test_the_scripted_run_reproduces_the_golden_history_exactly(tmp_path):
    fresh = record_run(tmp_path / "ws")
    golden = load_golden()
    assert len(fresh) == len(golden)
    for a, b in zip(fresh, golden, strict=True):
        assert dataclasses.asdict(a) == dataclasses.asdict(b), f"diverged at seq {b.seq}"
