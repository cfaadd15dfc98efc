"""`sia bisect` finds the accepted iteration whose edit broke answer extraction.

The run's history is scripted (val accepted every edit, as a small val set might), and one
edit makes the harness return no answer. Bisect re-evaluates candidates for real: each
harness commit from git, run in the sandboxed runner on the test split of the any-number
task, and must name the culprit within ⌈log2 n⌉ evaluations.
"""

import json
import math

import pytest
from click.testing import CliRunner

from sia.bisect import Metric, bisect_run, parse_metric
from sia.cli import cli
from sia.config import RunConfig
from sia.errors import SiaError
from sia.orchestrator import Orchestrator
from sia.ports import Components, EvalRequest, EvalResult, HarnessDraft
from statemachine import events as ev
from statemachine.planner import Budget
from tasks import get_task
from tests.support.any_number import registered
from tests.support.run_scripted import StepClock
from tests.support.scripted import ScriptedRunner

ITERATIONS, BROKEN = 8, 5
AGENT = b"def solve(client, item, config):\n    return config['answer']\n"


class Meta:
    name = "test-meta"

    def initial_harness(self, task, *, run_id):
        return HarnessDraft({"agent.py": AGENT, "harness.json": b'{"answer": "7"}\n'}, "Start")


class Edits:
    """Edit i rewrites harness.json; edit BROKEN empties the answer, and it stays empty."""

    name = "test-feedback"

    def decide(self, context):
        i = context.iteration
        answer = "" if i >= BROKEN else "7"
        return ev.DecisionMade(
            iteration=i,
            lever="edit",
            agent=self.name,
            rationale=f"Edit {i}",
            edit={
                "summary": f"Edit {i}" + (" (extraction rewritten)" if i == BROKEN else ""),
                "files": {"harness.json": json.dumps({"answer": answer, "edit": i}) + "\n"},
            },
        )


class AcceptEverything(ScriptedRunner):
    def evaluate(self, request: EvalRequest) -> EvalResult:
        return EvalResult(0.1 + 0.01 * request.iteration, {})


@pytest.fixture
def broken_run(ws, tiny_model_dir):
    config = RunConfig(
        task="any-number",
        mode="h",
        policy=str(tiny_model_dir),
        batch_size=2,
        budget=Budget(iterations=ITERATIONS),
    )
    with registered():
        task = get_task("any-number")
        components = Components(task, Meta(), Edits(), AcceptEverything())
        with ws.writer() as rec:
            Orchestrator(
                recorder=rec,
                repo=ws.repo(),
                artifacts=ws.artifacts(),
                components=components,
                clock=StepClock(),
            ).start("r", config)
        yield ws


@pytest.mark.slow
def test_bisect_names_the_edit_that_broke_extraction(broken_run):
    result = bisect_run(broken_run, "r", Metric("test"))
    assert result.culprit == BROKEN and result.last_good == BROKEN - 1
    assert result.candidates == list(range(ITERATIONS + 1))
    assert result.bound == math.ceil(math.log2(ITERATIONS)) == 3
    assert result.evaluations <= result.bound
    assert result.values[0] == 1.0 and result.values[ITERATIONS] == 0.0


@pytest.mark.slow
def test_the_cli_prints_the_culprit_and_its_diff(broken_run):
    args = ["-w", str(broken_run.root), "bisect", "r", "--good", "2", "--bad", "7", "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["culprit"] == BROKEN and data["evaluations"] <= math.ceil(math.log2(5))
    assert data["decision"]["rationale"] == f"Edit {BROKEN}"
    assert '-{"answer": "7", "edit": 4}' in data["patch"]
    assert '+{"answer": "", "edit": 5}' in data["patch"]


def test_bisect_refusals(broken_run):
    with pytest.raises(SiaError, match=r"did not regress between iterations 0 .* and 8"):
        bisect_run(broken_run, "r", Metric("val"), recorded=True)  # val rose every time
    with pytest.raises(SiaError, match=r"--good \(3\) must come before --bad"):
        bisect_run(broken_run, "r", Metric("val"), good=3, bad=3, recorded=True)
    with pytest.raises(SiaError, match="--bad 12 is not an accepted iteration"):
        bisect_run(broken_run, "r", Metric("val"), bad=12, recorded=True)
    with pytest.raises(SiaError, match="val only"):
        bisect_run(broken_run, "r", Metric("test"), recorded=True)
    with pytest.raises(SiaError, match="--metric takes"):
        parse_metric("accuracy")
    assert parse_metric("val:failures", higher_is_better=False).name == "val:failures"
