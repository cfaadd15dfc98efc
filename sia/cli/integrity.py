"""What commands do with a run whose ledger record was altered, and with a ledger file that
cannot be read all the way through.

The rule, the same for every command: an altered run may be *looked at* but not *built
on*.

- ``verify`` and ``replay`` are the diagnosis: they list every problem and exit 1.
- Commands that only show a run (``status``, ``log``, ``why``, ``episodes``, ``diff``) show
  it after one warning line on stderr naming the first altered seq and its kind, so stdout
  (``--json`` included) stays what it always is; when the altered record no longer folds
  into a state they stop with that line instead.
- Commands that build something on a run (``resume``, ``branch``, ``evaluate``,
  ``bisect``, ``export``, ``report``) refuse it with that line: a continuation, a score, a
  training set or a report made from a forged history would pass the forgery on.

Before any command writes, the ledger is read through once (:func:`check_readable`):
DuckDB detects a damaged block only when it reads it, and writing into a damaged file
would mix new events with ones nobody can read back.
"""

from __future__ import annotations

import click

from ledger import Problem, Recorder, RunNotFound
from sia.audit import problem_line
from sia.history import run_state
from sia.workspace import Workspace
from statemachine.errors import SiaError
from statemachine.state import RunState

__all__ = ["RunAltered", "check_readable", "inspect_run", "refuse_altered", "warn_altered_runs"]


class RunAltered(SiaError):
    """A command that builds on a run met a run whose ledger record fails verification."""


def _problems(recorder: Recorder, run_id: str) -> tuple[Problem, ...]:
    # The run-state wording for an unknown run, which every command has always used.
    if recorder.head(run_id) is None:
        raise RunNotFound(f"no run named {run_id} in this workspace")
    return recorder.verify(run_id).problems


def refuse_altered(recorder: Recorder, run_id: str, action: str) -> None:
    """Raise :class:`RunAltered` (one line: ``cannot ACTION RUN: seq N: kind: …``) if the
    run's hash chain, seqs or head do not verify."""
    problems = _problems(recorder, run_id)
    if problems:
        raise RunAltered(f"cannot {action} {run_id}: {problem_line(run_id, problems)}")


def warn_altered(run_id: str, problems: tuple[Problem, ...]) -> None:
    click.echo(
        f"Warning: run {run_id} was altered after it was recorded: "
        f"{problem_line(run_id, problems)}; what is shown may be forged",
        err=True,
    )


def warn_altered_runs(recorder: Recorder, warned: set[str] | None = None) -> set[str]:
    """The runs of the workspace that fail verification, each warned about once (runs in
    ``warned`` are not warned about again, so ``status --watch`` does not repeat itself)."""
    altered = set()
    for head in recorder.heads():
        problems = recorder.verify(head.run_id).problems
        if problems:
            altered.add(head.run_id)
            if warned is None or head.run_id not in warned:
                warn_altered(head.run_id, problems)
    if warned is not None:
        warned.update(altered)
    return altered


def inspect_run(recorder: Recorder, run_id: str) -> RunState:
    """The run's folded state for a command that shows it, after a warning line if the run
    was altered; :class:`RunAltered` if the altered record no longer folds."""
    problems = _problems(recorder, run_id)
    if not problems:
        return run_state(recorder, run_id)
    try:
        state = run_state(recorder, run_id)
    except SiaError:
        # The fold's own complaint ("seq 17 follows seq 15") names a symptom; the chain's
        # first problem names the cause.
        raise RunAltered(f"cannot show {run_id}: {problem_line(run_id, problems)}") from None
    warn_altered(run_id, problems)
    return state


def check_readable(ws: Workspace) -> None:
    """Read every run's events once, so a damaged ledger file stops a writing command
    before it writes (``LedgerCorrupt``, one line) rather than after."""
    if not ws.ledger_path.exists():
        return
    with ws.reader() as recorder:
        for head in recorder.heads():
            # verify reads every stored row of the run, and, unlike read, does not stop at
            # a payload that is not JSON: that is another run's tampering, not damage.
            recorder.verify(head.run_id)
