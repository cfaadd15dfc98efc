"""Choosing the next token from logits, with the log-probability of the choice.

Pure tensor functions so their exact semantics (what distribution a logprob refers to) are
unit-tested on hand-made logits, independent of any model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["next_tokens", "nucleus_mask", "sampling_logprobs"]


def nucleus_mask(logprobs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-p mask: keep the most likely tokens until their mass reaches ``top_p``.

    logprobs: (B, V) normalised log-probabilities; top_p: (B,) in (0, 1].
    Returns (B, V) bool, True where a token stays. A token is kept when the mass of the
    strictly more likely tokens is below ``top_p``; the most likely token is always kept.
    """
    sorted_logprobs, order = logprobs.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logprobs.exp()
    mass_before = probs.cumsum(dim=-1) - probs  # (B, V)
    keep_sorted = mass_before < top_p.unsqueeze(-1)
    keep_sorted[:, 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def sampling_logprobs(
    logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities of the distribution each row is sampled from.

    logits: (B, V); temperature: (B,) with 0 meaning greedy; top_p: (B,).
    Returns (B, V) float32: ``log_softmax(logits / T)`` restricted to the top-p nucleus and
    renormalised (tokens outside it are ``-inf``). Greedy rows get the raw log-softmax.
    """
    logits = logits.float()
    greedy = temperature == 0  # (B,)
    scale = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    logprobs = torch.log_softmax(logits / scale.unsqueeze(-1), dim=-1)  # (B, V)
    truncated = ~greedy & (top_p < 1)  # (B,)
    if bool(truncated.any()):
        keep = nucleus_mask(logprobs, top_p.float()) | ~truncated.unsqueeze(-1)
        logprobs = torch.log_softmax(logprobs.masked_fill(~keep, float("-inf")), dim=-1)
    return logprobs


def next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    generators: Sequence[torch.Generator | None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row and return it with its log-probability.

    logits: (B, V); temperature, top_p: (B,); ``generators[i]`` drives row i's sampling and
    may be ``None`` only for greedy rows. Returns tokens (B,) int64 and logprobs (B,)
    float32, each logprob under the distribution that row was sampled from (see
    :func:`sampling_logprobs`). Greedy takes the first maximum of the raw logits.
    """
    tokens = logits.argmax(dim=-1)  # (B,)
    sampled = [row for row in range(len(generators)) if temperature[row] != 0]
    if not sampled:
        # All greedy: the chosen token's raw log-softmax, without materialising (B, V) of it.
        logits = logits.float()
        chosen = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
        return tokens, chosen
    logprobs = sampling_logprobs(logits, temperature, top_p)  # (B, V)
    if sampled:
        # Inverse-CDF sampling: one uniform draw per row from that row's own generator. It is
        # an order of magnitude faster than torch.multinomial on a large vocabulary, and
        # float64 sums keep the CDF exact enough that no token's odds visibly shift.
        cumulative = logprobs[sampled].double().exp().cumsum(dim=-1)  # (S, V)
        for slot, row in enumerate(sampled):
            generator = generators[row]
            if generator is None:
                raise ValueError(f"row {row} samples (temperature > 0) but has no generator")
            draw = torch.rand((1,), generator=generator, device=generator.device)
            target = draw.double().to(cumulative.device) * cumulative[slot, -1]
            # right=True skips zero-probability tokens: their CDF step is empty.
            token = int(torch.searchsorted(cumulative[slot], target, right=True)[0])
            if token >= cumulative.shape[-1]:
                token = int(torch.nonzero(logprobs[row] > float("-inf"))[-1, 0])
            tokens[row] = token
    chosen = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B,)
    return tokens, chosen
