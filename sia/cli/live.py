"""What `sia run` and `sia resume` show while a run is driven, and the table it ends with.

:class:`RunView` is the orchestrator's observer: a rich progress display (iterations of the
budget, the current step, episodes done with an ETA) plus one printed line per verdict. It
only reads the events it is handed, so what it shows is what the ledger holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from statemachine import events as ev
from statemachine.planner import (
    ApplyEdit,
    AskFeedback,
    Evaluate,
    PlanBatch,
    Record,
    RunRollout,
    Step,
    TrainAdapter,
    WriteInitialHarness,
)
from statemachine.state import IterationRecord, RunState

__all__ = ["RunView", "score_table"]


def _describe(step: Step) -> str | None:
    match step:
        case WriteInitialHarness():
            return "writing the initial harness"
        case PlanBatch(iteration=i):
            return f"iteration {i}: planning the batch"
        case RunRollout(iteration=i, item_ids=ids):
            return f"iteration {i}: rollout of {len(ids)} episodes"
        case AskFeedback(iteration=i):
            return f"iteration {i}: feedback"
        case ApplyEdit(iteration=i):
            return f"iteration {i}: committing the edit"
        case TrainAdapter(iteration=i, decision=d):
            return f"iteration {i}: training ({d.algorithm})"
        case Evaluate(iteration=i, split=split):
            return f"iteration {i}: evaluating on {split}"
        case Record():
            return None
    return type(step).__name__


class RunView:
    """Progress bars and verdict lines for one driven run; a context manager.

    ``quiet`` shows nothing while the run goes (the final table is the caller's choice).
    """

    def __init__(self, console: Console, iterations: int, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self._iterations = self._progress.add_task("iterations", total=iterations)
        self._step: TaskID | None = None

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.stop()

    # ── RunObserver ─────────────────────────────────────────────────────────────────────

    def step_started(self, state: RunState, step: Step) -> None:
        text = _describe(step)
        if text is None:
            return
        total = len(step.item_ids) if isinstance(step, RunRollout) else None
        if self._step is not None:
            self._progress.remove_task(self._step)
        self._step = self._progress.add_task(text, total=total)
        self._progress.update(self._iterations, completed=len(state.iterations))

    def events_appended(self, state: RunState, events: Sequence[ev.Event]) -> None:
        self._progress.update(self._iterations, completed=len(state.iterations))
        for event in events:
            line = _line(event)
            if line and not self.quiet:
                self._progress.console.print(line)

    # ── runner progress ─────────────────────────────────────────────────────────────────

    def episodes(self, done: int, total: int | None) -> None:
        """Episodes finished in the current rollout or evaluation, or training steps done."""
        if self._step is not None:
            self._progress.update(self._step, completed=done, total=total)


def _line(event: ev.Event) -> str | None:
    match event:
        case ev.RunStarted(task=task, mode=mode, seed=seed):
            return f"run started: task {task}, mode {mode}, seed {seed}"
        case ev.Evaluated(iteration=i, split=split, score=score):
            return f"  iteration {i}: {split} score [bold]{score:.3f}[/]"
        case ev.DecisionMade(iteration=i, lever="edit", edit=edit):
            return f"  iteration {i}: edit — {escape(str((edit or {}).get('summary', '')))}"
        case ev.DecisionMade(iteration=i, lever=lever, algorithm=algorithm):
            return f"  iteration {i}: {lever} with {algorithm}"
        case ev.CandidateAccepted(iteration=i, score=score, previous_best=previous):
            before = "-" if previous is None else f"{previous:.3f}"
            return f"  iteration {i}: [green]accepted[/] ({before} → {score:.3f})"
        case ev.CandidateRejected(iteration=i, score=score, best_score=best):
            return f"  iteration {i}: [yellow]rejected[/] ({score:.3f} ≤ best {best:.3f})"
        case ev.CandidateAbandoned(iteration=i, phase=phase, reason=reason):
            return f"  iteration {i}: [yellow]abandoned in {phase}[/]: {escape(reason)}"
        case ev.PatchRejected(iteration=i, agent=agent, stage=stage, reason=reason):
            return f"  iteration {i}: {agent} patch rejected at {stage}: {escape(reason)}"
        case ev.RunFailed(phase=phase, error=error):
            return f"[red]run failed in {phase}[/]: {escape(error)}"
    return None


def _change(rec: IterationRecord) -> str:
    d = rec.decision
    if d is None:
        return "initial harness" if rec.iteration == 0 else "-"
    if d.lever == "edit":
        return str((d.edit or {}).get("summary", "edit"))
    return f"train ({d.algorithm})"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def score_table(state: RunState) -> Table:
    """Validation score per iteration, the verdict, and the test score of the best one."""
    best = state.best.iteration if state.best else None
    table = Table(title=f"run {state.run_id} ({state.task}, mode {state.mode})")
    for name, justify in (
        ("iter", "right"),
        ("change", "left"),
        ("rollout", "right"),
        ("val", "right"),
        ("verdict", "left"),
        ("test", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for rec in state.iterations:
        verdict = {True: "accepted", False: "rejected", None: "-"}[rec.accepted]
        if rec.abandoned is not None:
            verdict = "abandoned"
        if rec.iteration == 0 and rec.score is not None:
            verdict = "baseline"
        test = _score(state.test_score) if rec.iteration == best else ""
        reward = rec.rollout.mean_reward if rec.rollout else None
        table.add_row(
            str(rec.iteration), _change(rec), _score(reward), _score(rec.score), verdict, test
        )
    table.caption = "test: scored once, on the best candidate, when the run ends"
    if state.agent_calls:
        table.caption += (
            f"; agents: {state.agent_calls} model calls, ${state.agent_cost_usd:.4f} at list price"
        )
    return table


def summary(state: RunState) -> dict[str, Any]:
    """The few numbers a script wants after a run (``--json``)."""
    return {
        "run_id": state.run_id,
        "status": state.status,
        "best_iteration": state.best.iteration if state.best else None,
        "best_val": state.best.score if state.best else None,
        "test": state.test_score,
        "val_by_iteration": {rec.iteration: rec.score for rec in state.iterations},
        "agent_calls": state.agent_calls,
        "agent_cost_usd": round(state.agent_cost_usd, 6),
    }
