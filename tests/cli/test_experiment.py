"""`sia experiment`: each (mode, seed) a named run, the table recomputed from the ledger,
and a killed experiment finished by running the same command again.

End to end on the tiny model with a task whose test score depends on the seed's split,
so the table's means and standard deviations are not all the same number.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import sia.cli.experiment  # noqa: F401  (registers the command)
from sia.cli import cli
from sia.errors import SiaError
from sia.experiment import (
    ExperimentSpec,
    RunResult,
    aggregate,
    check_definition,
    mean_std,
    plan_runs,
    render_markdown,
)
from sia.history import run_state
from sia.workspace import Workspace
from tasks import registry
from tests.support.any_number import AnyNumberTask, factory

TASK = "even-sums-v1"
#: The tiny task's split sizes (tests.support.any_number): val and test have 6 items each.
VAL = TEST = 6


class EvenSumsTask(AnyNumberTask):
    """any-number's items, but only items whose sum is even can score: how many a split
    holds depends on the seed, so runs of different seeds score differently."""

    id = TASK

    def reward(self, item, answer_text):
        return super().reward(item, answer_text) if int(item.answer) % 2 == 0 else 0.0


@contextlib.contextmanager
def registered() -> Iterator[None]:
    saved = registry._FACTORIES
    registry._FACTORIES = {**saved, TASK: lambda seed: EvenSumsTask(seed, factory(seed).config)}
    try:
        yield
    finally:
        registry._FACTORIES = saved


@pytest.fixture(autouse=True)
def even_sums_task():
    with registered():
        yield


def _args(ws, model_dir, *extra: str) -> list[str]:
    return [
        "-w", str(ws), "experiment", "--task", TASK, "--policy", str(model_dir),
        "--modes", "w+h,base", "--seeds", "2", "--iterations", "1", "--batch-size", "2",
        "--name", "e", *extra,
    ]  # fmt: skip


def _table(ws) -> list[dict]:
    return json.loads((ws / "experiments" / "e.json").read_text())["table"]


# ── aggregation ──────────────────────────────────────────────────────────────────────────


def _naive(values):
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) * (v - mean) for v in values) / (n - 1) if n > 1 else None
    return mean, (math.sqrt(var) if var is not None else None)


def test_mean_and_sample_std_match_a_naive_reference():
    rng = random.Random(3)
    for n in (1, 2, 3, 5, 17):
        values = [rng.uniform(-2, 3) for _ in range(n)]
        stat = mean_std(values)
        mean, std = _naive(values)
        assert stat.n == n and stat.mean == pytest.approx(mean, abs=1e-12)
        if n == 1:
            assert stat.std is None
        else:
            assert stat.std == pytest.approx(std, abs=1e-12)
            assert stat.std == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert mean_std([]).mean is None and mean_std([]).n == 0
    assert mean_std([0.5, 0.5, 0.5]).std == 0.0


def test_rows_group_finished_runs_by_mode_in_table_order():
    scores = {("h", 0): 0.5, ("h", 1): 0.25, ("h", 2): None, ("base", 0): 0.1, ("base", 1): 0.3}
    results = [
        RunResult(f"x-{mode}-s{seed}", mode, seed, "done" if test is not None else "failed", test)
        for (mode, seed), test in scores.items()
    ]
    rows = aggregate(results, ("base", "h", "w+h"))
    assert [row.label for row in rows] == ["base", "SIA-H", "SIA-W+H"]
    base, h, wh = rows
    assert (base.stat.mean, base.stat.std) == pytest.approx(_naive([0.1, 0.3]))
    assert (h.stat.mean, h.stat.std, h.stat.n) == pytest.approx((*_naive([0.5, 0.25]), 2))
    assert h.to_dict()["per_seed"] == {"0": 0.5, "1": 0.25, "2": None}
    assert wh.stat.n == 0 and wh.stat.mean is None
    md = render_markdown(ExperimentSpec("x", ("base", "h", "w+h"), (0, 1, 2)), rows)
    assert "| SIA-H | 0.375 ± 0.177 | 2/3 | s0: 0.500, s1: 0.250, s2: failed |" in md


def test_plan_names_runs_and_makes_base_a_run_without_iterations():
    spec = ExperimentSpec("e", ("w+h", "base", "h"), (1, 0), {"task": "arith", "batch_size": 4})
    plan = plan_runs(spec)
    assert [p.run_id for p in plan] == [
        "e-base-s0", "e-base-s1", "e-h-s0", "e-h-s1", "e-wh-s0", "e-wh-s1",
    ]  # fmt: skip
    base = plan[0].config
    assert (base.mode, base.budget.iterations, base.batch_size) == ("h", 0, 4)
    assert plan[-1].config.mode == "w+h" and plan[-1].config.group_size == 4
    assert plan[-1].config.budget.iterations == 3 and plan[-1].config.seed == 1
    for bad in ({"name": "a/b"}, {"modes": ("h", "x")}, {"seeds": ()}):
        kwargs = {"name": "e", "modes": ("h",), "seeds": (0,), **bad}
        with pytest.raises(SiaError):
            ExperimentSpec(**kwargs)


def test_a_stored_definition_refuses_other_options_but_not_other_seeds(tmp_path):
    path = tmp_path / "experiments" / "e.json"
    stored = ExperimentSpec("e", ("h",), (0, 1), {"task": "arith", "batch_size": 4})
    path.parent.mkdir()
    path.write_text(json.dumps({"definition": stored.to_dict()}))
    check_definition(path, ExperimentSpec("e", ("base", "h"), (0, 1, 2), stored.options))
    other = ExperimentSpec("e", ("h",), (0, 1), {**stored.options, "batch_size": 8})
    with pytest.raises(SiaError, match=r"defined with batch_size=4 \(now 8\)"):
        check_definition(path, other)


# ── end to end ───────────────────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """The experiment run once, uninterrupted, in process."""
    ws = tmp_path_factory.mktemp("whole") / "ws"
    with registered():
        out = CliRunner().invoke(cli, _args(ws, tiny_model_dir, "--json"))
    assert out.exit_code == 0, out.output
    return ws, json.loads(out.stdout)


def _states(ws) -> dict:
    with Workspace.open(ws).reader() as recorder:
        return {head.run_id: run_state(recorder, head.run_id) for head in recorder.heads()}


@pytest.mark.slow
def test_the_table_holds_each_runs_recorded_test_score(finished):
    ws, report = finished
    states = _states(ws)
    assert sorted(states) == ["e-base-s0", "e-base-s1", "e-wh-s0", "e-wh-s1"]
    assert all(state.status == "done" for state in states.values())
    rows = {row["mode"]: row for row in report["table"]}
    assert list(rows) == ["base", "w+h"]
    for mode, slug in (("base", "base"), ("w+h", "wh")):
        recorded = [states[f"e-{slug}-s{seed}"].test_score for seed in (0, 1)]
        assert rows[mode]["per_seed"] == {"0": recorded[0], "1": recorded[1]}
        assert (rows[mode]["mean"], rows[mode]["std"]) == pytest.approx(_naive(recorded))
    # The seeds' splits differ, so their scores do: the check above compares real numbers.
    assert len({s.test_score for s in states.values()}) > 1
    # base: the initial harness, evaluated on val and then on test, no iteration.
    for seed in (0, 1):
        base = states[f"e-base-s{seed}"]
        assert [rec.iteration for rec in base.iterations] == [0]
        assert base.best.iteration == 0 and base.config["budget"]["iterations"] == 0
        assert states[f"e-wh-s{seed}"].iterations[-1].iteration == 1
    # The saved files say the same as the command did.
    assert _table(ws) == report["table"]
    md = (ws / "experiments" / "e.md").read_text()
    mean, std = rows["w+h"]["mean"], rows["w+h"]["std"]
    assert f"| SIA-W+H | {mean:.3f} ± {std:.3f} | 2/2 |" in md
    svg = ET.parse(ws / "experiments" / "e.svg").getroot()
    assert svg.tag.endswith("svg") and len(svg.findall(".//{*}circle")) == 4


@pytest.mark.slow
def test_the_same_command_again_runs_nothing_and_other_options_are_refused(
    finished, tiny_model_dir
):
    ws, report = finished
    heads = {run: state.last_seq for run, state in _states(ws).items()}
    again = CliRunner().invoke(cli, _args(ws, tiny_model_dir, "--json"))
    assert again.exit_code == 0, again.output
    assert again.stderr.count("skipped") == 4
    assert json.loads(again.stdout)["table"] == report["table"]
    assert {run: state.last_seq for run, state in _states(ws).items()} == heads
    other = CliRunner().invoke(cli, _args(ws, tiny_model_dir, "--batch-size", "3"))
    assert other.exit_code == 1 and len(other.output.strip().splitlines()) == 1
    assert "was made with batch_size=2 (now 3)" in other.output
    assert {run: state.last_seq for run, state in _states(ws).items()} == heads


_KILLED = textwrap.dedent(
    """
    import sys
    import sia.cli.experiment
    from sia.cli import main
    from tests.cli.test_experiment import registered

    with registered():
        sys.argv = ["sia", *sys.argv[1:]]
        main()
    """
)


@pytest.mark.slow
def test_a_killed_experiment_finishes_only_what_is_missing(tmp_path, finished, tiny_model_dir):
    ws = tmp_path / "ws"
    # Each base run evaluates val then test; die three episodes into e-wh-s0's baseline.
    env = {
        **os.environ,
        "PYTHONPATH": os.getcwd(),
        "SIA_CRASH_AT": f"after-episode:{2 * (VAL + TEST) + 3}",
    }
    args = _args(ws, tiny_model_dir, "--quiet")
    died = subprocess.run([sys.executable, "-c", _KILLED, *args], env=env, capture_output=True)
    assert died.returncode == -9, died.stderr.decode()
    before = _states(ws)
    assert {run: s.status for run, s in before.items()} == {
        "e-base-s0": "done", "e-base-s1": "done", "e-wh-s0": "running",
    }  # fmt: skip
    # The definition was stored before the runs; the table so far shows nothing finished.
    assert [row["n"] for row in _table(ws)] == [0, 0]

    out = CliRunner().invoke(cli, _args(ws, tiny_model_dir, "--json"))
    assert out.exit_code == 0, out.output
    assert out.stderr.count("skipped") == 2
    assert "e-wh-s0: resume" in out.stderr and "e-wh-s1: start" in out.stderr
    after = _states(ws)
    for run in ("e-base-s0", "e-base-s1"):
        assert after[run].last_seq == before[run].last_seq  # not touched
    assert after["e-wh-s0"].resumes == 1 and after["e-wh-s1"].resumes == 0
    assert all(state.status == "done" for state in after.values())
    # Same runs, same scores as the uninterrupted experiment: the same table.
    assert json.loads(out.stdout)["table"] == finished[1]["table"] == _table(ws)
