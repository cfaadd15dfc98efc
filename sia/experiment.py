"""Experiments: every (mode, seed) of one task as its own named run, and the table that
compares the modes on the test split.

An experiment is a definition (run options, modes, seeds) stored in
``experiments/NAME.json`` under the workspace. Its runs are ordinary runs with
deterministic ids (``NAME-h-s0``, ``NAME-wh-s1``), started, resumed or skipped through the
same orchestrator as ``sia run`` and ``sia resume``, so re-running an experiment finishes
only what is missing. Its table is recomputed from the ledger every time: for each mode,
the test score each run recorded for its val-selected candidate, as mean ± sample standard
deviation over the seeds.

``base`` is a run of mode ``h`` with an iteration budget of 0: the initial harness on the
base model is evaluated on val (the baseline), becomes the run's best, and is scored once
on test when the run ends, like any run's best candidate.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from xml.sax.saxutils import escape

from harness_repo.repo import validate_run_id
from ledger import Recorder
from sia.config import RunConfig
from sia.errors import SiaError
from sia.files import write_atomic
from sia.history import run_state
from sia.orchestrator import Orchestrator, RunObserver
from sia.workspace import Workspace
from statemachine.state import RunState

__all__ = [
    "LABELS",
    "MODES",
    "ExperimentError",
    "ExperimentReport",
    "ExperimentSpec",
    "PlannedRun",
    "Row",
    "RunDisplay",
    "RunNotice",
    "RunResult",
    "Stat",
    "aggregate",
    "check_definition",
    "check_runs",
    "collect",
    "describe",
    "experiment_paths",
    "format_stat",
    "mean_std",
    "plan_runs",
    "render_markdown",
    "render_svg",
    "report",
    "run_experiment",
    "run_id_for",
]

#: Modes an experiment compares, in table order; ``base`` runs no iteration.
MODES: tuple[str, ...] = ("base", "h", "w", "w+h")
#: The table's row names.
LABELS: dict[str, str] = {"base": "base", "h": "SIA-H", "w": "SIA-W", "w+h": "SIA-W+H"}
# Run ids name git branches: '+' is not allowed there.
_SLUGS: dict[str, str] = {"base": "base", "h": "h", "w": "w", "w+h": "wh"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = 1


class ExperimentError(SiaError):
    """An experiment definition that is invalid or conflicts with what the workspace holds."""


# ── definition and plan ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class ExperimentSpec:
    """What an experiment runs: ``options`` are :class:`RunConfig` fields except ``mode``
    and ``seed`` (``budget`` as a dict), shared by every run; ``modes`` and ``seeds`` span
    the runs."""

    name: str
    modes: tuple[str, ...]
    seeds: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name.endswith((".", ".lock")):
            raise ExperimentError(
                f"experiment name {self.name!r} must be letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        unknown = [mode for mode in self.modes if mode not in MODES]
        if unknown or not self.modes:
            raise ExperimentError(
                f"modes must be some of {', '.join(MODES)}, got {', '.join(self.modes) or 'none'}"
            )
        if len(set(self.modes)) != len(self.modes):
            raise ExperimentError(f"modes repeat: {', '.join(self.modes)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ExperimentError(f"seeds must be distinct and at least one, got {self.seeds}")
        if {"mode", "seed"} & set(self.options):
            raise ExperimentError("mode and seed are set per run, not in the options")
        # Canonical order: the table's, whatever order the command named them in.
        object.__setattr__(self, "modes", tuple(m for m in MODES if m in self.modes))
        object.__setattr__(self, "seeds", tuple(sorted(self.seeds)))
        object.__setattr__(self, "options", json.loads(json.dumps(self.options)))
        for planned in plan_runs(self):  # every run's config validates, now
            validate_run_id(planned.run_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "name": self.name,
            "modes": list(self.modes),
            "seeds": list(self.seeds),
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        # Each mistake names its field: the definition is a file a user may have edited.
        if not isinstance(data, Mapping):
            raise ExperimentError(
                f"not an experiment definition: an object is needed, not {type(data).__name__}"
            )
        missing = [key for key in ("name", "modes", "seeds", "options") if key not in data]
        if missing:
            raise ExperimentError(f"not an experiment definition: no {', '.join(missing)}")
        try:
            field = "modes"
            modes = tuple(data["modes"])
            field = "seeds"
            seeds = tuple(int(s) for s in data["seeds"])
            field = "options"
            options = dict(data["options"])
        except (TypeError, ValueError) as exc:
            raise ExperimentError(f"not an experiment definition: {field}: {exc}") from exc
        return cls(name=data["name"], modes=modes, seeds=seeds, options=options)


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    mode: str
    seed: int
    config: RunConfig


def run_id_for(name: str, mode: str, seed: int) -> str:
    """The deterministic id of an experiment's run: ``NAME-h-s0``, ``NAME-wh-s2``."""
    return f"{name}-{_SLUGS[mode]}-s{seed}"


def _run_config(options: Mapping[str, Any], mode: str, seed: int) -> RunConfig:
    data = {**options, "mode": "h" if mode == "base" else mode, "seed": seed}
    if mode == "base":
        # The initial harness on the base model: evaluated on val, then on test; no iteration.
        data["budget"] = {**data.get("budget", {}), "iterations": 0}
    return RunConfig.from_dict(data)


def plan_runs(spec: ExperimentSpec) -> list[PlannedRun]:
    """The experiment's runs, mode by mode (table order), seeds ascending."""
    return [
        PlannedRun(
            run_id_for(spec.name, mode, seed), mode, seed, _run_config(spec.options, mode, seed)
        )
        for mode in spec.modes
        for seed in spec.seeds
    ]


# ── checks against what the workspace holds ──────────────────────────────────────────────


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(had: Mapping[str, Any], wants: Mapping[str, Any]) -> list[str]:
    a, b = _flat(had), _flat(wants)
    return [
        f"{k}={a.get(k)!r} (now {b.get(k)!r})"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]


def check_definition(path: Path, spec: ExperimentSpec) -> None:
    """Refuse ``spec`` if ``path`` stores this experiment with other run options.

    Modes and seeds may change (runs already made are reused, the table follows the
    command); the options every run shares may not.
    """
    if not path.exists():
        return
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or "definition" not in saved:
            raise ValueError("no 'definition' in it")
        stored = ExperimentSpec.from_dict(saved["definition"])
    except (OSError, ValueError, ExperimentError) as exc:
        # Named with the file, which is the user's to fix (or to move aside).
        raise ExperimentError(f"cannot read {path}: {exc}") from exc
    diff = _differences(stored.options, spec.options)
    if diff:
        raise ExperimentError(
            f"experiment {spec.name} was defined with {'; '.join(diff)}; "
            "pass another --name for a new experiment"
        )


def check_runs(recorder: Recorder, plan: Sequence[PlannedRun]) -> None:
    """Refuse the plan if one of its run ids holds a run made with another config."""
    for planned in plan:
        if recorder.head(planned.run_id) is None:
            continue
        stored = RunConfig.from_dict(run_state(recorder, planned.run_id).config).to_dict()
        diff = _differences(stored, planned.config.to_dict())
        if diff:
            raise ExperimentError(
                f"run {planned.run_id} was made with {'; '.join(diff)}; "
                "pass another --name for a new experiment"
            )


# ── results from the ledger ──────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class RunResult:
    """One run as the ledger holds it; ``status`` is ``missing`` before it starts."""

    run_id: str
    mode: str
    seed: int
    status: str
    test: float | None = None
    best_iteration: int | None = None
    best_val: float | None = None
    iterations: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _result(planned: PlannedRun, state: RunState | None) -> RunResult:
    if state is None:
        return RunResult(planned.run_id, planned.mode, planned.seed, "missing")
    best = state.best
    return RunResult(
        planned.run_id,
        planned.mode,
        planned.seed,
        state.status,
        # Only a finished run's test score is the val-selected candidate's final one.
        test=state.test_score if state.status == "done" else None,
        best_iteration=best.iteration if best else None,
        best_val=best.score if best else None,
        iterations=max(0, len(state.iterations) - 1),
        error=state.error,
    )


def collect(recorder: Recorder, plan: Sequence[PlannedRun]) -> list[RunResult]:
    """Each planned run's status and recorded scores, folded from the ledger."""
    results = []
    for planned in plan:
        exists = recorder.head(planned.run_id) is not None
        results.append(_result(planned, run_state(recorder, planned.run_id) if exists else None))
    return results


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``n - 1``) of ``n`` values; ``None`` when
    undefined (no value; std with fewer than two)."""

    mean: float | None
    std: float | None
    n: int


def mean_std(values: Iterable[float]) -> Stat:
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Stat(None, None, 0)
    mean = math.fsum(xs) / n
    if n < 2:
        return Stat(mean, None, 1)
    return Stat(mean, math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)), n)


@dataclass(frozen=True)
class Row:
    """One line of the table: a mode, its statistics over seeds, and each seed's run."""

    mode: str
    label: str
    stat: Stat
    runs: tuple[RunResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "label": self.label,
            "mean": self.stat.mean,
            "std": self.stat.std,
            "n": self.stat.n,
            "seeds": len(self.runs),
            "per_seed": {str(r.seed): r.test for r in self.runs},
            "status": {str(r.seed): r.status for r in self.runs},
        }


def aggregate(results: Sequence[RunResult], modes: Sequence[str]) -> list[Row]:
    """One row per mode (in ``modes`` order) over the finished runs' test scores."""
    rows = []
    for mode in modes:
        runs = tuple(sorted((r for r in results if r.mode == mode), key=lambda r: r.seed))
        stat = mean_std(r.test for r in runs if r.test is not None)
        rows.append(Row(mode, LABELS[mode], stat, runs))
    return rows


# ── rendering ────────────────────────────────────────────────────────────────────────────


def format_stat(stat: Stat) -> str:
    if stat.mean is None:
        return "-"
    if stat.std is None:
        return f"{stat.mean:.3f}"
    return f"{stat.mean:.3f} ± {stat.std:.3f}"


def _seed_cell(run: RunResult) -> str:
    return f"{run.test:.3f}" if run.test is not None else run.status


def describe(spec: ExperimentSpec) -> str:
    """One line naming what the runs share."""
    o = spec.options
    budget = o.get("budget", {})
    seeds = ", ".join(str(s) for s in spec.seeds)
    parts = [
        f"task `{o.get('task')}`",
        f"policy `{o.get('policy')}`",
        f"{budget.get('iterations')} iterations",
        f"batch {o.get('batch_size')}",
        f"seeds {seeds}",
    ]
    return ", ".join(parts)


def render_markdown(spec: ExperimentSpec, rows: Sequence[Row]) -> str:
    """The paper-style table with per-seed values, as markdown."""
    lines = [
        f"## Experiment `{spec.name}`",
        "",
        describe(spec),
        "",
        "| method | test (mean ± std) | seeds | per seed |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        per_seed = ", ".join(f"s{r.seed}: {_seed_cell(r)}" for r in row.runs)
        lines.append(
            f"| {row.label} | {format_stat(row.stat)} | {row.stat.n}/{len(row.runs)} | {per_seed} |"
        )
    lines += [
        "",
        "Test-split score of each run's val-selected candidate (as its ledger records it); "
        "mean ± sample standard deviation over seeds. `base` is the initial harness on the "
        "base model, no iterations. Runs: "
        + ", ".join(f"`{r.run_id}`" for row in rows for r in row.runs)
        + ".",
        "",
    ]
    return "\n".join(lines)


def render_svg(spec: ExperimentSpec, rows: Sequence[Row]) -> str:
    """A self-contained SVG bar chart: mean per mode, ±std whiskers, one dot per seed."""
    values = [r.test for row in rows for r in row.runs if r.test is not None]
    tops = [(row.stat.mean or 0.0) + (row.stat.std or 0.0) for row in rows]
    lo = min([0.0, *values])
    hi = max([0.0, *values, *tops])
    if lo >= 0.0 and hi <= 1.0:
        hi = 1.0
    hi = hi if hi > lo else lo + 1.0
    left, top, plot_h, slot = 60, 40, 220, 110
    width, height = left + slot * len(rows) + 20, top + plot_h + 50

    def y(v: float) -> float:
        return top + plot_h * (hi - v) / (hi - lo)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">{escape(spec.name)}: test score by mode</text>',
    ]
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(
            f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
        )
    for k, row in enumerate(rows):
        cx = left + slot * k + slot / 2
        out.append(
            f'<text x="{cx:.1f}" y="{top + plot_h + 20}" text-anchor="middle">'
            f"{escape(row.label)}</text>"
        )
        stat = row.stat
        if stat.mean is not None:
            y0, y1 = y(max(lo, min(0.0, hi))), y(stat.mean)
            out.append(
                f'<rect x="{cx - 30:.1f}" y="{min(y0, y1):.1f}" width="60" '
                f'height="{abs(y0 - y1):.1f}" fill="#8fb3d9"/>'
                f'<text x="{cx:.1f}" y="{top + plot_h + 36}" text-anchor="middle" '
                f'fill="#555">{escape(format_stat(stat))}</text>'
            )
        if stat.mean is not None and stat.std is not None:
            a, b = y(stat.mean - stat.std), y(stat.mean + stat.std)
            out.append(
                f'<path d="M{cx:.1f},{a:.1f}V{b:.1f}M{cx - 8:.1f},{a:.1f}h16'
                f'M{cx - 8:.1f},{b:.1f}h16" stroke="#222" fill="none"/>'
            )
        scored = [r for r in row.runs if r.test is not None]
        for j, run in enumerate(scored):
            dx = (j - (len(scored) - 1) / 2) * 8
            out.append(
                f'<circle cx="{cx + dx:.1f}" cy="{y(run.test):.1f}" r="3" fill="#c0392b">'
                f"<title>{escape(run.run_id)}: {run.test:.4f}</title></circle>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ── files ────────────────────────────────────────────────────────────────────────────────


def experiment_paths(root: Path, name: str) -> dict[str, Path]:
    """Where an experiment's definition and report live: ``experiments/NAME.{json,md,svg}``."""
    folder = Path(root) / "experiments"
    return {ext: folder / f"{name}.{ext}" for ext in ("json", "md", "svg")}


@dataclass(frozen=True)
class ExperimentReport:
    spec: ExperimentSpec
    results: tuple[RunResult, ...]
    rows: tuple[Row, ...]
    files: dict[str, Path]

    @property
    def unfinished(self) -> list[RunResult]:
        return [r for r in self.results if r.status != "done"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "definition": self.spec.to_dict(),
            "score": "test score of the val-selected candidate; mean ± sample std over seeds",
            "table": [row.to_dict() for row in self.rows],
            "runs": [r.to_dict() for r in self.results],
            "files": {ext: str(path) for ext, path in self.files.items()},
        }


def report(root: Path, spec: ExperimentSpec, recorder: Recorder) -> ExperimentReport:
    """Recompute the table from the ledger and save it (json, md, svg) under ``root``."""
    results = tuple(collect(recorder, plan_runs(spec)))
    rows = tuple(aggregate(results, spec.modes))
    files = experiment_paths(root, spec.name)
    done = ExperimentReport(spec, results, rows, files)
    write_atomic(files["md"], render_markdown(spec, rows))
    write_atomic(files["svg"], render_svg(spec, rows))
    write_atomic(files["json"], json.dumps(done.to_dict(), indent=2, sort_keys=True) + "\n")
    return done


# ── driving ──────────────────────────────────────────────────────────────────────────────


class RunDisplay(RunObserver, Protocol):
    """What shows one run's progress: an orchestrator observer that also hears episodes."""

    def episodes(self, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class RunNotice:
    """Told before each run (``action``: start, resume, skip) and after a driven one (end)."""

    planned: PlannedRun
    index: int
    total: int
    action: str
    result: RunResult


def _drive(
    workspace: Workspace,
    planned: PlannedRun,
    resume: bool,
    display: AbstractContextManager[RunDisplay | None],
    stop_requested: Callable[[], str | None],
) -> RunState:
    from sia.wiring import open_components  # loads model code only when a run is driven

    with workspace.writer() as recorder, display as view:
        progress = view.episodes if view is not None else None
        with open_components(planned.config, recorder, progress=progress) as components:
            orch = Orchestrator(
                recorder=recorder,
                repo=workspace.repo(),
                artifacts=workspace.artifacts(),
                components=components,
                observer=view,
                stop_requested=stop_requested,
            )
            if resume:
                return orch.resume(planned.run_id)
            return orch.start(planned.run_id, planned.config)


def run_experiment(
    root: Path,
    spec: ExperimentSpec,
    *,
    display: Callable[[PlannedRun], AbstractContextManager[RunDisplay | None]] | None = None,
    notify: Callable[[RunNotice], None] | None = None,
    stop_requested: Callable[[], str | None] = lambda: None,
) -> ExperimentReport:
    """Start the missing runs, resume the interrupted ones, skip the finished or failed
    ones, then save and return the report.

    Everything is checked before anything runs: each run's config, the stored definition
    and the configs of runs already made under these ids. ``Interrupted`` (Ctrl-C, or
    SIGTERM where the caller maps it to ``KeyboardInterrupt``, or a stop named by
    ``stop_requested``) propagates after the run recorded it; re-running the experiment
    resumes it.
    """
    from sia.wiring import check_supported

    plan = plan_runs(spec)
    for planned in plan:
        check_supported(planned.config)
    workspace = Workspace.create(root)
    files = experiment_paths(root, spec.name)
    with workspace.writer() as recorder:
        check_runs(recorder, plan)
        check_definition(files["json"], spec)
        before = report(root, spec, recorder)
    for index, (planned, result) in enumerate(zip(plan, before.results, strict=True)):
        action = {"missing": "start", "running": "resume"}.get(result.status, "skip")
        if notify is not None:
            notify(RunNotice(planned, index, len(plan), action, result))
        if action == "skip":
            continue
        view = display(planned) if display is not None else nullcontext()
        state = _drive(workspace, planned, action == "resume", view, stop_requested)
        if notify is not None:
            notify(RunNotice(planned, index, len(plan), "end", _result(planned, state)))
    with workspace.reader() as recorder:
        return report(root, spec, recorder)
