"""The fault ledger's counts can fail: a lost, a repeated and a doubled event are each seen."""

import duckdb
import pytest

from ledger import DuckDBRecorder, NewEvent
from statemachine import events as ev
from statemachine.codec import encode
from tests.faults.accounting import difference, run_loss
from tests.support.scripted import simulate


def test_difference_counts_each_side() -> None:
    assert difference("aabc", "abcc") == (1, 1)
    assert difference("abc", "cba") == (0, 0)


@pytest.fixture
def history():
    return simulate("r1", iterations=3, mode="w+h")


def _store(path, envelopes) -> None:
    with DuckDBRecorder(path) as recorder:
        for seq, envelope in enumerate(envelopes):
            recorder.append(
                "r1", [NewEvent(*encode(envelope.event))], expected_seq=seq, ts=1.0 + seq
            )


def test_an_intact_copy_loses_nothing(tmp_path, history) -> None:
    _store(tmp_path / "l.duckdb", history)
    with DuckDBRecorder(tmp_path / "l.duckdb", read_only=True) as recorder:
        assert run_loss(recorder, "r1", history) == (0, 0)


def test_an_event_never_written_is_lost_and_one_written_twice_is_a_duplicate(
    tmp_path, history
) -> None:
    verdicts = [i for i, e in enumerate(history) if isinstance(e.event, ev.OutcomeRecorded)]
    short = [e for i, e in enumerate(history) if i != verdicts[0]]
    _store(tmp_path / "short.duckdb", short)
    doubled = [*history[: verdicts[1] + 1], history[verdicts[1]], *history[verdicts[1] + 1 :]]
    _store(tmp_path / "doubled.duckdb", doubled)
    with DuckDBRecorder(tmp_path / "short.duckdb", read_only=True) as recorder:
        assert run_loss(recorder, "r1", history) == (1, 0)
    with DuckDBRecorder(tmp_path / "doubled.duckdb", read_only=True) as recorder:
        assert run_loss(recorder, "r1", history) == (0, 1)


def test_rows_deleted_behind_the_ledgers_back_are_lost(tmp_path, history) -> None:
    path = tmp_path / "l.duckdb"
    _store(path, history)
    with duckdb.connect(str(path)) as db:
        db.execute("DELETE FROM events WHERE run_id = 'r1' AND seq IN (3, 4)")
    with DuckDBRecorder(path, read_only=True) as recorder:
        lost, duplicates = run_loss(recorder, "r1", history)
    # Two seqs are gone; whatever they recorded is missing by content too.
    assert lost >= 2 and duplicates == 0
