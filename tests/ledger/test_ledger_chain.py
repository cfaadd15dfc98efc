"""The pure hash chain: canonical encoding, hashing, and verify_chain on hand-made rows."""

import dataclasses
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import GENESIS, EventRecord, Problem, RunHead, canonical_json, event_hash, verify_chain
from ledger.chain import hash_encoded

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


def chain(n: int, run_id: str = "r") -> list[EventRecord]:
    records, prev = [], GENESIS
    for seq in range(1, n + 1):
        payload = {"seq": seq, "note": "é" * (seq % 3)}
        digest = event_hash(prev, run_id, seq, 100.0 + seq, "tick", 1, payload)
        records.append(EventRecord(run_id, seq, 100.0 + seq, "tick", 1, payload, prev, digest))
        prev = digest
    return records


def head_of(records: list[EventRecord]) -> RunHead:
    last = records[-1]
    return RunHead(last.run_id, last.seq, last.hash, last.ts)


def kinds(problems: list[Problem]) -> list[tuple[int, str]]:
    return [(p.seq, p.kind) for p in problems]


def test_canonical_json_is_sorted_compact_and_unescaped() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"], "c": {"z": None, "y": True}}) == (
        '{"a":[1.5,"é"],"b":1,"c":{"y":true,"z":null}}'
    )


def test_event_hash_covers_the_documented_encoding() -> None:
    expected = hashlib.sha256(
        canonical_json([GENESIS, "r", 1, 2.5, "t", 1, {"k": "v"}]).encode()
    ).hexdigest()
    assert event_hash(GENESIS, "r", 1, 2.5, "t", 1, {"k": "v"}) == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("prev_hash", "f" * 64),
        ("run_id", "s"),
        ("seq", 2),
        ("ts", 2.75),
        ("type", "u"),
        ("version", 2),
    ],
)
def test_every_field_changes_the_hash(field: str, value: object) -> None:
    args = {
        "prev_hash": GENESIS,
        "run_id": "r",
        "seq": 1,
        "ts": 2.5,
        "type": "t",
        "version": 1,
        "payload": {"k": "v"},
    }
    assert event_hash(**args) != event_hash(**{**args, field: value})


def test_integer_time_hashes_like_the_float_it_is_stored_as() -> None:
    assert event_hash(GENESIS, "r", 1, 5, "t", 1, {}) == event_hash(
        GENESIS, "r", 1, 5.0, "t", 1, {}
    )


@settings(max_examples=150, deadline=None)
@given(payload=payloads, ts=st.floats(allow_nan=False, allow_infinity=False))
def test_spliced_encoding_equals_whole_encoding(payload: dict, ts: float) -> None:
    text = canonical_json(payload)
    assert hash_encoded(GENESIS, "run", 7, ts, "t", 2, text) == event_hash(
        GENESIS, "run", 7, ts, "t", 2, payload
    )
    # A payload read back from its stored text hashes the same.
    assert event_hash(GENESIS, "run", 7, ts, "t", 2, json.loads(text)) == event_hash(
        GENESIS, "run", 7, ts, "t", 2, payload
    )


def test_intact_chain_has_no_problems() -> None:
    records = chain(5)
    assert verify_chain("r", records, head_of(records)) == []
    assert verify_chain("r", list(reversed(records)), head_of(records)) == []
    assert verify_chain("r", [], None) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 25), data=st.data())
def test_any_deleted_event_is_named(n: int, data: st.DataObject) -> None:
    records = chain(n)
    gone = data.draw(st.integers(1, n))
    kept = [r for r in records if r.seq != gone]
    problems = verify_chain("r", kept, head_of(records))
    assert problems[0].seq == gone
    assert len(problems) == 1


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 25), data=st.data())
def test_any_edited_event_is_named(n: int, data: st.DataObject) -> None:
    records = chain(n)
    k = data.draw(st.integers(1, n))
    field = data.draw(st.sampled_from(["payload", "ts", "type", "version"]))
    change = {"payload": {"x": 1}, "ts": 0.5, "type": "other", "version": 9}[field]
    records[k - 1] = dataclasses.replace(records[k - 1], **{field: change})
    assert kinds(verify_chain("r", records, head_of(chain(n)))) == [(k, "hash_mismatch")]


def test_gap_of_several_events_names_the_first_missing() -> None:
    records = chain(8)
    kept = [r for r in records if r.seq not in (3, 4, 5)]
    problems = verify_chain("r", kept, head_of(records))
    assert kinds(problems) == [(3, "gap")]
    assert "3..5" in problems[0].detail


def test_duplicate_is_named_even_when_identical() -> None:
    records = chain(4)
    problems = verify_chain("r", [*records, records[1]], head_of(records))
    assert kinds(problems) == [(2, "duplicate")]


def test_sequence_starting_below_one_is_a_bad_start() -> None:
    records = chain(3)
    zero = dataclasses.replace(records[0], seq=0)
    assert kinds(verify_chain("r", [zero, *records], head_of(records)))[0] == (0, "bad_start")


def test_rows_of_another_run_are_flagged() -> None:
    records = chain(3)
    stray = chain(1, run_id="other")[0]
    assert kinds(verify_chain("r", [*records, stray], head_of(records))) == [(1, "foreign_run")]


def test_wrong_genesis_link_is_a_broken_link() -> None:
    first = chain(1)[0]
    prev = "1" * 64
    forged = dataclasses.replace(
        first,
        prev_hash=prev,
        hash=event_hash(prev, "r", 1, first.ts, first.type, first.version, first.payload),
    )
    assert kinds(verify_chain("r", [forged], head_of([forged]))) == [(1, "broken_link")]


def test_head_problems() -> None:
    records = chain(4)
    assert kinds(verify_chain("r", records, None)) == [(4, "missing_head")]
    assert kinds(verify_chain("r", records[:2], head_of(records))) == [(3, "truncated")]
    assert kinds(verify_chain("r", records, head_of(records[:3]))) == [(4, "beyond_head")]
    wrong = dataclasses.replace(head_of(records), hash="f" * 64)
    assert kinds(verify_chain("r", records, wrong)) == [(4, "head_mismatch")]


def test_unencodable_stored_payload_is_a_hash_mismatch() -> None:
    records = chain(3)
    records[1] = dataclasses.replace(records[1], payload={"bad": float("nan")})
    assert kinds(verify_chain("r", records, head_of(records))) == [(2, "hash_mismatch")]


def test_problem_reads_as_one_line() -> None:
    assert str(Problem(4, "gap", "seq 4 missing before seq 5")) == (
        "seq 4: gap: seq 4 missing before seq 5"
    )
