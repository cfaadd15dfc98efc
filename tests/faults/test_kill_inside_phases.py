"""SIGKILL `sia run` in the middle of a phase (seeded points inside EVAL, ROLLOUT and
TRAIN), then `sia resume`: the run ends as an uninterrupted one does, with every episode
and event recorded once. Real processes, ledger, runner and trainer on the tiny model."""

import os
import random
import sys
from collections import Counter

import pytest

from ledger import DuckDBRecorder
from tests.faults.test_run_interrupt import _loss, _run_args, _sia, _structure

ANY_NUMBER = "tests.support.any_number"

#: A ``w`` run of the any-number task (6 val items) with batch 2 in groups of 4 runs 6
#: val episodes for the baseline, then 8 rollout episodes, trains, and evaluates again.
VAL, ROLLOUT = 6, 8
_points = random.Random(7)
KILLS = [
    ("EVAL", f"after-episode:{_points.randint(1, VAL - 1)}"),
    ("ROLLOUT", f"after-episode:{VAL + _points.randint(1, ROLLOUT - 1)}"),
    ("TRAIN", "after-train-step:1"),
]


def _rows(ws) -> dict:
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        return {(r.iteration, r.purpose, r.episode_id): r for r in recorder.read_episodes("r")}


def _episodes(ws) -> Counter:
    with DuckDBRecorder(ws / "ledger.duckdb", read_only=True) as recorder:
        rows = recorder.read_episodes("r")
    assert len({(row.iteration, row.purpose, row.episode_id) for row in rows}) == len(rows)
    return Counter((row.iteration, row.purpose) for row in rows)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model_dir):
    ws = tmp_path_factory.mktemp("whole") / "ws"
    common = [*_run_args(tiny_model_dir, "w"), "--batch-size", "2", "--seed", "2"]
    common += ["--task", "any-number", "--algorithm", "bon_bc"]
    process = _sia(ws, *common, "--run-id", "r", "--quiet", module=ANY_NUMBER)
    assert process.wait(timeout=600) == 0, process.stderr.read().decode()
    return ws, common


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "point"), KILLS, ids=[phase for phase, _ in KILLS])
def test_a_kill_inside_a_phase_is_resumed_exactly_once(tmp_path, faults, whole, phase, point):
    whole_ws, common = whole
    ws = tmp_path / "ws"
    os.environ["SIA_CRASH_AT"] = point
    try:
        died = _sia(ws, *common, "--run-id", "r", "--quiet", module=ANY_NUMBER)
        code = died.wait(timeout=600)
    finally:
        del os.environ["SIA_CRASH_AT"]
    assert code == -9, died.stderr.read().decode()
    injection = faults.inject(f"SIGKILL inside {phase} ({point})")
    state, _, _ = _structure(ws)
    assert state.phase.value == phase  # the kill landed inside the phase under test
    before = _rows(ws)
    resumed = _sia(ws, "resume", "r", "--quiet", module=ANY_NUMBER)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    injection.account(*_loss(ws, whole_ws))
    assert (injection.lost, injection.duplicates) == (0, 0)
    state, shape, _ = _structure(ws)
    _, expected, _ = _structure(whole_ws)
    assert state.status == "done" and shape == expected
    assert _episodes(ws) == _episodes(whole_ws)
    # Episodes finished before the kill were reused as recorded, not run again.
    after = _rows(ws)
    assert before and all(after[key] == row for key, row in before.items())
    print(f"{phase}: killed at {point}, resumed", file=sys.stderr)
