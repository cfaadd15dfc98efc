"""``trimul-v1``: write a fast AlphaFold-3 triangle multiplicative update, scored by speedup.

After the GPU-MODE ``trimul`` challenge, sized for a CPU: each item is one problem
configuration (batch, sequence length, channels, hidden channels, mask or not, normal or
heavy-tailed inputs); the answer is Python source defining ``custom_kernel(data)``. The
reward runs it in a sandboxed process (:mod:`tasks.trimul.sandbox`), gates on agreement
with the reference (:mod:`tasks.trimul.reference`) and maps the measured speedup to
``[0.05, 1]``; a wrong or failing answer scores 0. This module imports no torch: the
task loads anywhere, only an evaluation needs it.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tasks.base import Item, Splits, Task, check_split_sizes, template_files
from tasks.trimul.sandbox import ENTRY, TOLERANCE, Limits, Outcome, evaluate, extract_code

__all__ = ["SOLUTION", "TrimulConfig", "TrimulTask", "reference_source", "speedup_reward"]

# The configuration space; an item is one point of it whose reference run is cheap enough.
_BATCHES = (1, 2)
_SEQ_LENS = (16, 24, 32, 48, 64)
_DIMS = (32, 64, 96, 128)
_HIDDENS = (32, 64, 128)
_DISTRIBUTIONS = ("normal", "cauchy")
#: Multiply-adds of one reference call, B*N^2*(N*H + 5*C*H + C*C), at most ~20 ms on a
#: laptop core, so that one evaluation stays within a few seconds including torch import.
_MAX_MACS = 250_000_000

#: The item answer: the reference fused and reordered, same float32 arithmetic.
#: One GEMM computes all five projections of the normalised input, the gates are applied
#: in place, and the sum over k is one batched matmul instead of N broadcast products.
SOLUTION = '''\
import torch
import torch.nn.functional as F


def custom_kernel(data):
    """Triangle multiplicative update (outgoing), fused for fewer, larger kernels."""
    z, mask, w = data  # z [B, N, N, C]; mask [B, N, N] or None
    B, N, _, C = z.shape
    H = w["proj_a.weight"].shape[0]
    zn = F.layer_norm(z, (C,), w["norm_in.weight"], w["norm_in.bias"], 1e-5)
    # All five projections in one GEMM; rows: gate_a | gate_b | gate_o | proj_a | proj_b.
    names = ("gate_a", "gate_b", "gate_o", "proj_a", "proj_b")
    weight = torch.cat([w[name + ".weight"] for name in names])  # [4H + C, C]
    y = zn.reshape(-1, C) @ weight.T  # [B*N*N, 4H + C]
    gates = y[:, : 2 * H + C].sigmoid_()  # [B*N*N, 2H + C]
    ab = gates[:, : 2 * H].mul_(y[:, 2 * H + C :])  # [B*N*N, 2H]: a | b
    if mask is not None:
        ab.mul_(mask.reshape(-1, 1))
    ab = ab.reshape(B, N, N, 2 * H)
    a = ab[..., :H].permute(0, 3, 1, 2)  # [B, H, i, k]
    b = ab[..., H:].permute(0, 3, 2, 1)  # [B, H, k, j]
    x = torch.matmul(a, b).permute(0, 2, 3, 1)  # [B, i, j, H]
    x = F.layer_norm(x, (H,), w["norm_out.weight"], w["norm_out.bias"], 1e-5)
    out = x.reshape(-1, H) @ w["proj_o.weight"].T  # [B*N*N, C]
    return out.mul_(gates[:, 2 * H :]).reshape(B, N, N, C)
'''

_QUESTION = """\
Write a fast PyTorch implementation of the AlphaFold 3 triangle multiplicative update \
(outgoing edges, supplement algorithm 12) as a Python function `{entry}(data)`. \
`data = (z, mask, weights)`: z is float32 [B, N, N, C], mask is float32 [B, N, N] or None, \
weights is the dict of tensors described in the reference code; return float32 \
[B, N, N, C]. This item: B={batch}, N={seq_len}, C={dim}, H={hidden}, mask={mask}, \
inputs {distribution}. The output must match the reference within {tolerance:g} of its \
scale; the reward grows with the speedup over the reference. \
Answer with the complete code in one ```python block."""


def reference_source() -> str:
    """The source of :mod:`tasks.trimul.reference`, as the sandbox executes it."""
    return resources.files("tasks.trimul").joinpath("reference.py").read_text()


def speedup_reward(speedup: float) -> float:
    """``0.5 + 0.25 * log2(speedup)`` clipped to ``[0.05, 1]``.

    The reference itself (speedup 1) scores 0.5, every doubling adds 0.25, 4x saturates at
    1.0; a correct but slow answer keeps 0.05, above every wrong one.
    """
    if not speedup > 0:  # NaN, zero or negative: nothing measured worth more
        return 0.05
    return min(1.0, max(0.05, 0.5 + 0.25 * math.log2(speedup)))


@dataclass(frozen=True)
class TrimulConfig:
    """Split sizes and the sandbox limits of each evaluation."""

    train: int = 12
    val: int = 4
    test: int = 4
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        sizes = {"train": self.train, "val": self.val, "test": self.test}
        check_split_sizes("trimul", sizes, len(_SHAPES))


class TrimulTask(Task):
    id = "trimul-v1"
    episode_timeout_s = 300.0  # hundreds of code tokens per attempt, retries on top
    description = (
        "Kernel optimisation: write `custom_kernel(data)`, a fast PyTorch implementation of "
        "the AlphaFold 3 triangle multiplicative update (outgoing), for one problem shape. "
        "The answer is Python source (raw or in a ```python block). It runs in a sandboxed "
        f"process; if its output differs from the reference by more than {TOLERANCE:g} of "
        "the output scale, or it fails, the reward is 0, else 0.5 + 0.25*log2(speedup over "
        "the reference) clipped to [0.05, 1] (the reference itself scores 0.5)."
    )
    metric = "speedup over the reference, gated by correctness (0.5 = as fast)"
    answer_is_best = False
    public_meta_keys = ("shape", "reference_code")

    def __init__(self, seed: int = 0, config: TrimulConfig | None = None) -> None:
        super().__init__(seed)
        self.config = config or TrimulConfig()

    def splits(self, seed: int) -> Splits:
        rng = random.Random(seed)
        sizes = (self.config.train, self.config.val, self.config.test)
        reference = reference_source()
        items = [
            _item(shape, rng.randrange(2**31), reference)
            for shape in rng.sample(_SHAPES, sum(sizes))
        ]
        train, val = sizes[0], sizes[0] + sizes[1]
        return {"train": items[:train], "val": items[train:val], "test": items[val:]}

    def reward(self, item: Item, answer_text: str) -> float:
        return self.reward_detail(item, answer_text)["reward"]

    def score(self, item: Item, answer_text: str) -> tuple[float, dict[str, Any]]:
        detail = self.reward_detail(item, answer_text)  # one measurement for both
        return detail["reward"], detail

    def reward_detail(self, item: Item, answer_text: str) -> dict[str, Any]:
        """Evaluate afresh (nothing is cached): the verdict and what was measured."""
        outcome = self.evaluate(item, answer_text)
        reward = speedup_reward(outcome.speedup or 0.0) if outcome.correct else 0.0
        return {
            "reward": reward,
            "correct": outcome.correct,
            "max_error": outcome.max_error,
            "speedup": outcome.speedup,
            "candidate_ms": outcome.candidate_ms,
            "reference_ms": outcome.reference_ms,
            "reason": outcome.reason,
            "device": outcome.device,
        }

    def evaluate(self, item: Item, answer_text: str) -> Outcome:
        """Run the answer's code for ``item`` in the sandbox; never raises on a bad answer."""
        return evaluate(
            extract_code(answer_text),
            item.meta["shape"],
            item.meta["seed"],
            item.meta["reference_code"],
            self.config.limits,
        )

    def harness_template(self) -> dict[str, bytes]:
        return template_files("tasks.trimul")


def _macs(batch: int, seq_len: int, dim: int, hidden: int) -> int:
    return batch * seq_len**2 * (seq_len * hidden + 5 * dim * hidden + dim * dim)


_SHAPES: list[dict[str, Any]] = [
    {
        "batch": b,
        "seq_len": n,
        "dim": c,
        "hidden": h,
        "masked": masked,
        "distribution": dist,
    }
    for b, n, c, h, masked, dist in itertools.product(
        _BATCHES, _SEQ_LENS, _DIMS, _HIDDENS, (False, True), _DISTRIBUTIONS
    )
    if _macs(b, n, c, h) <= _MAX_MACS
]


def _item(shape: dict[str, Any], seed: int, reference: str) -> Item:
    name = (
        f"trimul-b{shape['batch']}-n{shape['seq_len']}-c{shape['dim']}-h{shape['hidden']}"
        f"-{'mask' if shape['masked'] else 'nomask'}-{shape['distribution']}"
    )
    question = _QUESTION.format(
        entry=ENTRY,
        batch=shape["batch"],
        seq_len=shape["seq_len"],
        dim=shape["dim"],
        hidden=shape["hidden"],
        mask="[B, N, N] tensor" if shape["masked"] else "None",
        distribution="heavy-tailed (Cauchy)" if shape["distribution"] == "cauchy" else "normal",
        tolerance=TOLERANCE,
    )
    meta = {"shape": dict(shape), "reference_code": reference, "seed": seed}
    return Item(id=name, prompt=question, answer=SOLUTION, meta=meta)
