"""The reference triangle multiplicative update ("outgoing"), written for reading, not speed.

AlphaFold 3, supplementary algorithm 12, with an optional pair mask. Every candidate is
checked against, and timed relative to, ``reference_kernel``. The file is self-contained
(it imports only torch) because the sandbox executes its source in a fresh interpreter
that cannot import the ``tasks`` package.

Shapes: ``B`` batch, ``N`` sequence length, ``C`` pair channels, ``H`` hidden channels.
Weights follow ``torch.nn.Linear``: a ``[out, in]`` matrix applied as ``x @ W.T``, no bias.

``data = (z, mask, weights)``:

- ``z``: float32 ``[B, N, N, C]``, the pair representation.
- ``mask``: float32 ``[B, N, N]`` of 0.0/1.0, or ``None`` (every pair valid).
- ``weights``: a dict of float32 tensors:

  ========================  ==========  ==============================================
  ``norm_in.weight/bias``   ``[C]``     LayerNorm of ``z``
  ``proj_a.weight``         ``[H, C]``  left projection ``a``
  ``gate_a.weight``         ``[H, C]``  gate of ``a``
  ``proj_b.weight``         ``[H, C]``  right projection ``b``
  ``gate_b.weight``         ``[H, C]``  gate of ``b``
  ``norm_out.weight/bias``  ``[H]``     LayerNorm of the contraction ``x``
  ``proj_o.weight``         ``[C, H]``  output projection
  ``gate_o.weight``         ``[C, C]``  output gate (reads the normalised ``z``)
  ========================  ==========  ==============================================

Returns float32 ``[B, N, N, C]``.
"""

import torch
import torch.nn.functional as F

__all__ = ["EPS", "WEIGHT_SHAPES", "reference_kernel"]

#: LayerNorm epsilon, both norms.
EPS = 1e-5

#: name -> shape in terms of "C" and "H"; how the sandbox builds random weights.
WEIGHT_SHAPES = {
    "norm_in.weight": ("C",),
    "norm_in.bias": ("C",),
    "proj_a.weight": ("H", "C"),
    "gate_a.weight": ("H", "C"),
    "proj_b.weight": ("H", "C"),
    "gate_b.weight": ("H", "C"),
    "norm_out.weight": ("H",),
    "norm_out.bias": ("H",),
    "proj_o.weight": ("C", "H"),
    "gate_o.weight": ("C", "C"),
}


def linear(x, weight):
    """``x @ weight.T``: [..., in] -> [..., out], no bias (AF3's LinearNoBias)."""
    return x @ weight.T


def reference_kernel(data):
    z, mask, w = data  # z [B, N, N, C]; mask [B, N, N] or None
    C = z.shape[-1]
    H = w["proj_a.weight"].shape[0]

    # 1. Normalise the pair representation over its channels.
    z = F.layer_norm(z, (C,), w["norm_in.weight"], w["norm_in.bias"], EPS)  # [B, N, N, C]

    # 2. Gated left and right projections; masked pairs contribute nothing.
    a = torch.sigmoid(linear(z, w["gate_a.weight"])) * linear(z, w["proj_a.weight"])  # [B,N,N,H]
    b = torch.sigmoid(linear(z, w["gate_b.weight"])) * linear(z, w["proj_b.weight"])  # [B,N,N,H]
    if mask is not None:
        a = a * mask[..., None]  # [B, N, N, H]
        b = b * mask[..., None]  # [B, N, N, H]

    # 3. Outgoing edges: x_ij = sum_k a_ik * b_jk, per batch and hidden channel, one k
    #    at a time exactly as written (a batched matmul computes the same thing faster).
    x = torch.zeros_like(a)  # [B, N, N, H]
    for k in range(z.shape[2]):
        x += a[:, :, k, None, :] * b[:, None, :, k, :]  # [B, N, 1, H] * [B, 1, N, H]

    # 4. Normalise, project back to C channels, gate with the normalised input.
    x = F.layer_norm(x, (H,), w["norm_out.weight"], w["norm_out.bias"], EPS)  # [B, N, N, H]
    g = torch.sigmoid(linear(z, w["gate_o.weight"]))  # [B, N, N, C]
    return g * linear(x, w["proj_o.weight"])  # [B, N, N, C]
