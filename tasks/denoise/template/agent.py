"""Denoising harness: a configurable count-matrix pipeline; the answer is the matrix as JSON.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client. Unused: the answer is a few thousand numbers,
  which a small chat model cannot write out, let alone compute; the harness IS the
  denoising method. An edit may add a model call (say, to choose ``k`` from a summary of
  the data), but the template makes none, so its score does not depend on the weights.
- ``item``: the public item, ``{"id", "question", "counts"}``; ``counts`` is the train half
  of the molecule counts, a list of ``cells`` rows of ``genes`` integers.
- ``config``: the parsed ``harness.json``.

Pipeline, each step switched by the config so that an edit is a small diff:

1. ``normalise`` (bool): scale every cell to the median library size, so that neighbours
   are found by expression profile rather than by sequencing depth.
2. ``transform`` (``none`` | ``sqrt`` | ``log1p``): variance-stabilise the data the cell
   graph is built from (MAGIC uses ``sqrt``). Averaging itself happens on the (normalised)
   counts: the square of an average of square roots underestimates small means, which
   the log-scale metric punishes.
3. ``smoothing`` (``none`` | ``knn`` | ``diffusion``): replace each cell by an average over
   similar cells. ``knn`` averages the cell and its ``k`` nearest neighbours, ``t`` times;
   ``diffusion`` is MAGIC's: an adaptive alpha-decay kernel (bandwidth = distance to the
   ``k``-th neighbour, exponent ``decay``), made symmetric and row-stochastic, applied
   ``t`` times.
4. The normalisation is undone, so the answer is on the count scale.
5. ``round`` (bool): round to whole counts. Expected counts are fractional; rounding turns
   every mean below 0.5 into a zero.

Only numpy and the standard library: this file runs in a sandboxed process.
"""

import json
from typing import Any

import numpy as np

__all__ = ["SMOOTHERS", "TRANSFORMS", "denoise", "solve"]

TRANSFORMS = {"none": lambda m: m, "sqrt": np.sqrt, "log1p": np.log1p}


def _distances(data):
    """Euclidean distances between cells (rows); cells x cells."""
    squared = np.sum(data * data, axis=1)
    gram = squared[:, None] + squared[None, :] - 2.0 * data @ data.T
    return np.sqrt(np.maximum(gram, 0.0))


def _knn_operator(data, k, decay):
    """Row-stochastic: the cell itself and its ``k`` nearest neighbours, equal weights."""
    cells = data.shape[0]
    order = np.argsort(_distances(data), axis=1, kind="stable")[:, : k + 1]
    operator = np.zeros((cells, cells))
    np.put_along_axis(operator, order, 1.0, axis=1)
    return operator / operator.sum(axis=1, keepdims=True)


def _diffusion_operator(data, k, decay):
    """MAGIC's Markov matrix: adaptive alpha-decay kernel, symmetrised, row-normalised."""
    distances = _distances(data)
    # Distance to the k-th neighbour (column 0 is the cell itself); dense regions get a
    # narrow kernel, sparse ones a wide one.
    bandwidth = np.sort(distances, axis=1)[:, min(k, data.shape[0] - 1)]
    bandwidth = np.where(bandwidth > 0, bandwidth, 1.0)
    kernel = np.exp(-((distances / bandwidth[:, None]) ** decay))
    kernel = (kernel + kernel.T) / 2.0
    return kernel / kernel.sum(axis=1, keepdims=True)


SMOOTHERS = {"knn": _knn_operator, "diffusion": _diffusion_operator}


def denoise(counts, config: dict) -> Any:
    """The pipeline above on a cells x genes matrix; returns a float numpy array, same shape."""
    data = np.asarray(counts, dtype=np.float64)  # cells x genes
    library = data.sum(axis=1, keepdims=True)  # cells x 1
    scale = np.ones_like(library)  # cells x 1
    if config.get("normalise", False):
        target = float(np.median(library)) or 1.0
        scale = np.divide(target, library, out=np.ones_like(library), where=library > 0)
    transform = config.get("transform", "none")
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
    data = data * scale
    smoothing = config.get("smoothing", "none")
    if smoothing != "none":
        if smoothing not in SMOOTHERS:
            known = ", ".join(["none", *SMOOTHERS])
            raise ValueError(f"unknown smoothing {smoothing!r}; known: {known}")
        k = max(1, min(int(config.get("k", 5)), data.shape[0] - 1))
        operator = SMOOTHERS[smoothing](
            TRANSFORMS[transform](data), k, float(config.get("decay", 1))
        )
        steps = max(1, int(config.get("t", 1)))
        data = np.linalg.matrix_power(operator, steps) @ data  # cells x genes
    data = data / scale
    if config.get("round", False):
        data = np.rint(data)
    return data


def solve(client: Any, item: dict, config: dict) -> str:
    """Denoise ``item["counts"]``; the matrix as JSON text (``decimals`` places)."""
    data = denoise(item["counts"], config)
    decimals = int(config.get("decimals", 4))
    return json.dumps(np.round(data, decimals).tolist())
