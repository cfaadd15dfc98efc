"""The run display: it shows what the events say, and the final table equals the ledger."""

import io

from rich.console import Console

from sia.cli.live import RunView, score_table, summary
from sia.history import run_state
from sia.workspace import Workspace
from tests.support.run_scripted import config, orchestrator


def _console() -> Console:
    return Console(file=io.StringIO(), width=200, force_terminal=False, color_system=None)


def test_the_view_prints_every_verdict_and_the_table_matches_the_ledger(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    console = _console()
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "w+h")
        with RunView(console, 4) as view:
            orch.observer = view
            state = orch.start("r1", config("w+h", 4))
        stored = run_state(rec, "r1")
    assert stored == state
    out = console.file.getvalue()
    for rec in stored.iterations:
        assert f"iteration {rec.iteration}: val score {rec.score:.3f}" in out
        if rec.iteration and rec.accepted is not None:
            assert f"iteration {rec.iteration}: {'accepted' if rec.accepted else 'rejected'}" in out
        if rec.decision is not None:
            assert f"iteration {rec.iteration}: {rec.decision.lever}" in out

    table_console = _console()
    table_console.print(score_table(stored))
    rows = [line for line in table_console.file.getvalue().splitlines() if "│" in line]
    body = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert [int(row[0]) for row in body] == [rec.iteration for rec in stored.iterations]
    assert [row[3] for row in body] == [f"{rec.score:.3f}" for rec in stored.iterations]
    tests = [row[5] for row in body if row[5]]
    assert tests == [f"{stored.test_score:.3f}"]
    assert summary(stored)["val_by_iteration"] == {r.iteration: r.score for r in stored.iterations}


def test_a_quiet_view_prints_nothing(tmp_path):
    ws = Workspace.create(tmp_path / "ws")
    console = _console()
    with ws.writer() as rec:
        orch = orchestrator(ws, rec, "h")
        with RunView(console, 2, quiet=True) as view:
            orch.observer = view
            orch.start("r1", config("h", 2))
    assert console.file.getvalue() == ""


def test_episode_progress_updates_the_current_step():
    console = _console()
    with RunView(console, 1) as view:
        view.episodes(3, 8)  # before any step: ignored, no error
        from statemachine.planner import RunRollout
        from statemachine.state import RunState

        view.step_started(RunState("r"), RunRollout(1, "abc", None, ("a", "b")))
        view.episodes(1, 2)
        task = view._progress.tasks[-1]
        assert (task.completed, task.total) == (1, 2)


def test_agent_written_text_is_printed_literally():
    from sia.cli.live import _line
    from statemachine import events as ev

    console = _console()
    reason = "line 3 is '[/bold]', the patch expects '[red]x'"
    rejected = ev.PatchRejected(
        iteration=2, agent="claude-feedback", attempt=1, stage="apply", reason=reason, patch=""
    )
    edit = ev.DecisionMade(
        iteration=2, lever="edit", agent="a", rationale="r", edit={"summary": "[/] oops"}
    )
    for event in (rejected, edit):
        console.print(_line(event))
    out = console.file.getvalue()
    assert reason in out and "[/] oops" in out
