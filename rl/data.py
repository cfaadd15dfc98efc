"""Recorded rollouts as training samples, and how samples group into items.

Everything here is plain Python (no torch), so a caller can build and validate samples,
and read their groups, without paying for the tensor libraries.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rl.errors import RLError

__all__ = ["Sample", "group_by", "mean_reward"]


@dataclass(frozen=True)
class Sample:
    """One recorded completion of one prompt, with what the trainer needs and nothing else.

    ``logprobs[i]`` is the log-probability the sampler gave ``completion_ids[i]``, under
    ``log_softmax(logits / temperature)``; ``temperature`` 0 (greedy) is read as 1, the
    backend's convention. Sequences passed as lists are stored as tuples.
    ``completion_mask[i]`` False marks a token the environment injected (a tool result
    spliced into the completion): it is context for later tokens but never a training target.
    """

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    reward: float
    group: str
    temperature: float = 1.0
    completion_mask: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("prompt_ids", "completion_ids", "logprobs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.completion_mask is not None:
            object.__setattr__(self, "completion_mask", tuple(map(bool, self.completion_mask)))
        where = f"sample of group {self.group!r}"
        # The first completion token is predicted from the last prompt token, so a sample
        # with no prompt has one token the model never scores.
        if not self.prompt_ids:
            raise RLError(f"{where}: prompt_ids is empty")
        if not self.completion_ids:
            raise RLError(f"{where}: completion_ids is empty")
        if not all(isinstance(t, int) and t >= 0 for t in self.prompt_ids + self.completion_ids):
            raise RLError(f"{where}: token ids must be non-negative ints")
        n = len(self.completion_ids)
        if len(self.logprobs) != n:
            raise RLError(f"{where}: {len(self.logprobs)} logprobs for {n} completion tokens")
        if self.completion_mask is not None and len(self.completion_mask) != n:
            raise RLError(
                f"{where}: completion_mask has {len(self.completion_mask)} entries for "
                f"{n} completion tokens"
            )
        # A logprob of exactly 0 is legal (a certain token); -inf would poison every ratio.
        if not all(math.isfinite(lp) and lp <= 1e-4 for lp in self.logprobs):
            raise RLError(f"{where}: logprobs must be finite and <= 0")
        if isinstance(self.reward, bool) or not math.isfinite(self.reward):
            raise RLError(f"{where}: reward must be a finite number, got {self.reward!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise RLError(f"{where}: temperature must be >= 0, got {self.temperature!r}")

    @property
    def trained(self) -> tuple[bool, ...]:
        """Per completion token: is it a training target (sampled by the policy)?"""
        if self.completion_mask is None:
            return (True,) * len(self.completion_ids)
        return self.completion_mask

    @property
    def n_trained(self) -> int:
        """How many completion tokens are training targets."""
        return sum(self.trained)

    @property
    def scale(self) -> float:
        """The temperature the recorded logprobs divide logits by (greedy's 0 read as 1)."""
        return self.temperature if self.temperature > 0 else 1.0


def group_by(samples: Iterable[Sample]) -> dict[str, list[int]]:
    """Indices of the samples of each group, groups and members in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.group, []).append(index)
    return groups


def mean_reward(samples: Sequence[Sample]) -> float:
    """The mean reward of ``samples`` (0.0 for none)."""
    return sum(s.reward for s in samples) / len(samples) if samples else 0.0
