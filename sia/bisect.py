"""Find the first accepted iteration of a run where a metric regressed, by binary search.

The candidates are the run's accepted iterations in order (the baseline first): each is a
harness commit and an adapter. A candidate is *bad* when its metric is worse than the good
endpoint's by more than ``tolerance``. Given a good and a bad endpoint, the search tests
⌈log2 n⌉ candidates for n candidates after the good one, like ``git bisect``. Metrics are
measured on a frozen item set: a whole split, re-evaluated with the run's own config
through a fresh gateway and runner (the run's ledger is only read), or read from the
ledger (``recorded``: the val score and metrics each iteration recorded).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sia.errors import SiaError
from sia.evaluation import RecordedCandidate, candidate_evaluator, recorded_candidates
from sia.workspace import Workspace

__all__ = ["BisectResult", "Metric", "bisect_run", "parse_metric"]


@dataclass(frozen=True)
class Metric:
    """``split`` score, or one of the split's evaluation metrics (``key``)."""

    split: str
    key: str | None = None
    higher_is_better: bool = True

    @property
    def name(self) -> str:
        return self.split if self.key is None else f"{self.split}:{self.key}"


def parse_metric(text: str, *, higher_is_better: bool = True) -> Metric:
    """``val``, ``test``, or ``SPLIT:KEY`` for an evaluation metric such as ``val:failures``."""
    split, _, key = text.partition(":")
    if split not in ("train", "val", "test") or (_ and not key):
        raise SiaError(f"--metric takes val, test or SPLIT:KEY (like val:failures), not {text!r}")
    return Metric(split, key or None, higher_is_better)


@dataclass(frozen=True)
class BisectResult:
    metric: str
    good: int
    bad: int
    culprit: int  # the first bad iteration
    last_good: int
    values: dict[int, float]  # iteration -> measured value, for every candidate measured
    evaluations: int  # candidates measured by the search itself (endpoints excluded)
    bound: int  # ⌈log2 n⌉ for the n candidates after the good endpoint
    candidates: list[int] = field(default_factory=list)
    found: tuple[RecordedCandidate, RecordedCandidate] | None = None  # (last good, culprit)


def bisect_run(
    workspace: Workspace,
    run_id: str,
    metric: Metric,
    *,
    good: int | None = None,
    bad: int | None = None,
    tolerance: float = 0.0,
    recorded: bool = False,
    measure: Callable[[RecordedCandidate], float] | None = None,
) -> BisectResult:
    """Bisect the run's accepted iterations between ``good`` (default: the first) and
    ``bad`` (default: the last). ``measure`` overrides how a candidate is measured."""
    with workspace.reader() as recorder:
        candidates = [
            c for c in recorded_candidates(recorder, run_id) if c.accepted or c.iteration == 0
        ]
    if len(candidates) < 2:
        raise SiaError(f"run {run_id} has fewer than two accepted candidates to bisect")
    order = [c.iteration for c in candidates]
    lo = _position(order, good if good is not None else order[0], "--good", run_id)
    hi = _position(order, bad if bad is not None else order[-1], "--bad", run_id)
    if lo >= hi:
        raise SiaError(f"--good ({order[lo]}) must come before --bad ({order[hi]})")
    with contextlib.ExitStack() as stack:
        if measure is None and recorded:
            measure = _recorded(metric)
        elif measure is None:
            evaluate = stack.enter_context(candidate_evaluator(workspace, run_id))
            measure = _evaluated(evaluate, metric)
        return _search(candidates, lo, hi, metric, measure, tolerance)


def _search(
    candidates: list[RecordedCandidate],
    lo: int,
    hi: int,
    metric: Metric,
    measure: Callable[[RecordedCandidate], float],
    tolerance: float,
) -> BisectResult:
    order = [c.iteration for c in candidates]
    good, bad = order[lo], order[hi]
    values: dict[int, float] = {}

    def value(position: int) -> float:
        candidate = candidates[position]
        if candidate.iteration not in values:
            values[candidate.iteration] = float(measure(candidate))
        return values[candidate.iteration]

    reference = value(lo)

    def is_bad(position: int) -> bool:
        change = value(position) - reference
        return (-change if metric.higher_is_better else change) > tolerance

    if not is_bad(hi):
        raise SiaError(
            f"{metric.name} did not regress between iterations {order[lo]} "
            f"({reference:.4g}) and {order[hi]} ({value(hi):.4g})"
        )
    bound = math.ceil(math.log2(hi - lo))
    searched = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        searched += 1
        if is_bad(mid):
            hi = mid
        else:
            lo = mid
    return BisectResult(
        metric=metric.name,
        good=good,
        bad=bad,
        culprit=order[hi],
        last_good=order[lo],
        values=values,
        evaluations=searched,
        bound=bound,
        candidates=order,
        found=(candidates[lo], candidates[hi]),
    )


def _position(order: list[int], iteration: int, flag: str, run_id: str) -> int:
    if iteration not in order:
        known = ", ".join(map(str, order))
        raise SiaError(
            f"{flag} {iteration} is not an accepted iteration of {run_id} (accepted: {known})"
        )
    return order.index(iteration)


def _recorded(metric: Metric) -> Callable[[RecordedCandidate], float]:
    if metric.split != "val":
        raise SiaError("--recorded reads what the run measured: val only (test is scored once)")
    if metric.key is not None:
        raise SiaError("--recorded bisects the recorded val score; drop the :KEY")
    return lambda candidate: candidate.val


def _evaluated(
    evaluate: Callable[[RecordedCandidate, str], Any], metric: Metric
) -> Callable[[RecordedCandidate], float]:
    def measure(candidate: RecordedCandidate) -> float:
        score = evaluate(candidate, metric.split)
        if metric.key is None:
            return float(score.score)
        found: Any = score.metrics.get(metric.key)
        if isinstance(found, bool) or not isinstance(found, int | float):
            raise SiaError(f"the {metric.split} evaluation has no numeric metric {metric.key!r}")
        return float(found)

    return measure
