"""``denoise-v1``: denoise a small single-cell count matrix, scored against held-out molecules.

In the spirit of the MAGIC / openproblems "denoising" benchmark, shrunk to fit a laptop:
each item is one simulated dataset (a few cell types on low-rank gene programs, lognormal
library sizes, Poisson counts). Binomial thinning with ``p = 0.5`` splits every count into
a train half ``X``, which the harness sees, and an independent test half ``Y``, which only
the reward sees. A good denoiser predicts the expected counts behind ``X``; since ``Y`` is
an independent draw around the same means, it is scored by how close it comes to ``Y``.

Metric (``mse_norm``): both the denoised matrix and ``Y`` are normalised per cell to the
same library size (the median library size of ``X``), ``log1p``-transformed, and compared
by mean squared error. openproblems also rescales ``Y`` by the train/test total ratio;
per-cell normalisation makes that a no-op, so it is left out. The reward puts this error
on a fixed scale: ``0`` for returning ``X`` unchanged, ``1`` for the noiseless means (the
item's ``answer``), clipped to ``[0, 1]``.

numpy is imported here (generation and reward are matrix work); :mod:`tasks.registry`
imports this module lazily so that ``import tasks`` stays standard-library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.base import Item, Splits, Task, check_split_sizes, template_files
from tasks.errors import TaskError

__all__ = [
    "DenoiseConfig",
    "DenoiseTask",
    "mse_norm",
    "parse_matrix",
    "simulate",
]

#: Mixed into every dataset's seed, so this task's streams differ from any other numpy task's.
_SALT = 0x5EED_DE01
#: Thinning probability: the share of each molecule count that lands in the train half.
_THIN = 0.5
#: Decimals kept in the oracle answer; the reward is computed on the same rounded values.
_DECIMALS = 4
#: Most items a config may ask for, so a typo cannot make building the splits take minutes.
_MAX_ITEMS = 2000
#: The oracle must beat raw counts by this much ``mse_norm``, or the dataset is redrawn:
#: the reward divides by that gap.
_MIN_GAP = 1e-3

Matrix = Any  # numpy float array, cells x genes


@dataclass(frozen=True)
class DenoiseConfig:
    """Split sizes (datasets per split) and the size ranges datasets are drawn from."""

    train: int = 40
    val: int = 10
    test: int = 10
    cells: tuple[int, int] = (40, 80)
    genes: tuple[int, int] = (20, 40)
    cell_types: tuple[int, int] = (2, 4)

    def __post_init__(self) -> None:
        check_split_sizes("denoise", {"train": self.train, "val": self.val, "test": self.test})
        total = self.train + self.val + self.test
        if total > _MAX_ITEMS:
            raise TaskError(f"denoise: {total} datasets requested, at most {_MAX_ITEMS}")
        for name, floor in (("cells", 8), ("genes", 4), ("cell_types", 1)):
            low_high = getattr(self, name)
            if (
                not isinstance(low_high, tuple)
                or len(low_high) != 2
                or not all(_positive_int(v) for v in low_high)
                or not floor <= low_high[0] <= low_high[1]
            ):
                raise TaskError(
                    f"denoise: {name} must be a (low, high) pair of integers with "
                    f"{floor} <= low <= high, got {low_high!r}"
                )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True)
class Dataset:
    """One simulated dataset: the two thinned halves and the noiseless train-half means."""

    train: Matrix  # cells x genes, int: X, public
    test: Matrix  # cells x genes, int: Y, private
    means: Matrix  # cells x genes, float: E[X] = E[Y], the oracle


def simulate(rng: np.random.Generator, config: DenoiseConfig) -> Dataset:
    """Draw one dataset: cell types on low-rank programs, lognormal libraries, Poisson counts.

    Each cell's log expression is a gene baseline plus its latent position (its type's
    one-hot, jittered) times one sparse gene program per type, so the log means are low
    rank around the baseline: the structure MAGIC-style smoothing exploits, since cells of
    a type share a profile that their neighbours' counts estimate.
    """
    cells = int(rng.integers(config.cells[0], config.cells[1] + 1))
    genes = int(rng.integers(config.genes[0], config.genes[1] + 1))
    types = int(rng.integers(config.cell_types[0], config.cell_types[1] + 1))
    baseline = rng.normal(0.3, 1.0, genes)  # genes: log mean of the full counts
    programs = rng.normal(0.0, 1.2, (types, genes)) * (rng.random((types, genes)) < 0.5)
    kind = rng.integers(0, types, cells)  # cells: cell type
    latent = np.eye(types)[kind] + rng.normal(0.0, 0.15, (cells, types))  # cells x types
    library = rng.lognormal(0.0, 0.4, cells)  # cells: relative library size
    rate = library[:, None] * np.exp(baseline[None, :] + latent @ programs)  # cells x genes
    full = rng.poisson(rate)
    train = rng.binomial(full, _THIN)
    return Dataset(train=train, test=full - train, means=np.round(rate * _THIN, _DECIMALS))


def _log_normalised(matrix: Matrix, target: float) -> Matrix:
    """Rows scaled to library size ``target``, then ``log1p``; an all-zero row stays zero."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)  # cells x 1
    scale = np.divide(target, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(matrix * scale)


def mse_norm(denoised: Matrix, test: Matrix, train: Matrix) -> float:
    """openproblems' ``mse`` on library-normalised, ``log1p`` data (lower is better).

    Both matrices are normalised per cell to the median library size of the train half
    ``train``, so only each cell's proportions count, not the scale a denoiser returns.
    """
    target = float(np.median(train.sum(axis=1)))
    target = target if target > 0 else 1.0
    diff = _log_normalised(denoised, target) - _log_normalised(test, target)
    return float(np.mean(diff * diff))


def parse_matrix(text: Any, shape: tuple[int, int]) -> tuple[Matrix | None, str]:
    """The ``shape`` matrix JSON ``text`` spells, or ``None`` and why it is not one.

    Strict: a list of ``shape[0]`` lists of ``shape[1]`` finite, non-negative numbers
    (``true`` is not a number here).
    """
    if not isinstance(text, str):
        return None, f"answer is {type(text).__name__}, not text"
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None, "answer is not JSON"
    cells, genes = shape
    if not isinstance(value, list) or len(value) != cells:
        return None, f"answer is not a list of {cells} rows"
    for row in value:
        if not isinstance(row, list) or len(row) != genes:
            return None, f"a row is not a list of {genes} numbers"
        if not all(type(v) in (int, float) for v in row):
            return None, "a value is not a number"
    try:
        matrix = np.asarray(value, dtype=np.float64)
    except (OverflowError, ValueError):
        return None, "a value is out of range"
    if not np.all(np.isfinite(matrix)):
        return None, "a value is NaN or infinite"
    if np.any(matrix < 0):
        return None, "a value is negative"
    with np.errstate(over="ignore"):
        totals = matrix.sum(axis=1)
    if not np.all(np.isfinite(totals)):
        return None, "a row overflows"
    return matrix, ""


class DenoiseTask(Task):
    id = "denoise-v1"
    description = (
        "Count-matrix denoising (MAGIC / openproblems style): each item is a small simulated "
        "single-cell dataset, a cells x genes matrix of UMI counts (the train half of a "
        "binomial thinning). The harness returns the denoised matrix as JSON, same shape. "
        "Scored by mse_norm against the held-out half (both normalised per cell to one "
        "library size, log1p, mean squared error), as improvement over returning the counts "
        "unchanged: 0 = raw counts, 1 = the noiseless means."
    )
    metric = "mse_norm improvement over raw (0 = raw, 1 = oracle)"
    public_meta_keys = ("counts",)

    def __init__(self, seed: int = 0, config: DenoiseConfig | None = None) -> None:
        super().__init__(seed)
        self.config = config or DenoiseConfig()

    def splits(self, seed: int) -> Splits:
        sizes = (self.config.train, self.config.val, self.config.test)
        items = [self._item(seed, n) for n in range(sum(sizes))]
        train, val = sizes[0], sizes[0] + sizes[1]
        return {"train": items[:train], "val": items[train:val], "test": items[val:]}

    def reward(self, item: Item, answer_text: str) -> float:
        return self._score(item, answer_text)[0]

    def reward_detail(self, item: Item, answer_text: str) -> dict[str, Any]:
        """``mse``, ``mse_raw``, ``mse_oracle``, whether the answer was ``valid`` and why not.

        An invalid answer (not JSON, wrong shape, NaN, negative) scores ``0.0``, the same
        as returning the counts unchanged; its ``mse`` is ``None``.
        """
        return self._score(item, answer_text)[1]

    def _score(self, item: Item, answer_text: str) -> tuple[float, dict[str, Any]]:
        train = np.asarray(item.meta["counts"], dtype=np.float64)  # cells x genes
        test = np.asarray(item.meta["test"], dtype=np.float64)  # cells x genes
        oracle = np.asarray(item.meta["means"], dtype=np.float64)  # cells x genes
        mse_raw = mse_norm(train, test, train)
        mse_oracle = mse_norm(oracle, test, train)
        matrix, reason = parse_matrix(answer_text, train.shape)
        mse = None if matrix is None else mse_norm(matrix, test, train)
        reward = 0.0
        if mse is not None:
            # x / x is exactly 1.0, so the oracle's own (rounded) values score exactly 1.
            gain = (mse_raw - mse) / (mse_raw - mse_oracle)
            reward = float(min(1.0, max(0.0, gain))) if math.isfinite(gain) else 0.0
        detail = {
            "mse": mse,
            "mse_raw": mse_raw,
            "mse_oracle": mse_oracle,
            "valid": matrix is not None,
            "reason": reason,
        }
        return reward, detail

    def harness_template(self) -> dict[str, bytes]:
        return template_files("tasks.denoise")

    def _item(self, seed: int, number: int) -> Item:
        """Dataset ``number`` of ``seed``: its own stream, so sizes do not shift other items."""
        rng = np.random.default_rng([_SALT, seed % 2**64, number])
        while True:  # almost never loops: the oracle beats raw counts by far
            data = simulate(rng, self.config)
            train = data.train.astype(np.float64)
            gap = mse_norm(train, data.test, train) - mse_norm(data.means, data.test, train)
            if gap > _MIN_GAP:
                break
        cells, genes = data.train.shape
        item_id = f"denoise-{seed}-{number:04d}"
        prompt = (
            f"Dataset {item_id}: UMI counts of {cells} cells x {genes} genes (rows are cells). "
            "Denoise them: return a JSON list of lists with the expected count of every "
            "cell and gene, same shape, non-negative numbers."
        )
        meta = {
            "counts": data.train.tolist(),
            "test": data.test.tolist(),
            "means": data.means.tolist(),
        }
        return Item(id=item_id, prompt=prompt, answer=json.dumps(meta["means"]), meta=meta)
