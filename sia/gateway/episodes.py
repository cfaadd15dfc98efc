"""Episode attribution and budgets: which episode a call belongs to and what it may spend."""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["Budget", "EpisodeTicket", "Refusal"]


@dataclass(frozen=True)
class EpisodeTicket:
    """Who a harness process is: every call it makes is recorded under these fields.

    ``max_calls`` bounds the number of model calls and ``max_tokens`` the completion tokens
    of the whole episode. ``seed``, when set, makes unseeded sampling calls reproducible:
    call ``k`` samples with a seed derived from ``(seed, k)``. ``temperature``, when set,
    replaces the one every call asks for: rollouts that feed training must explore, even
    under a harness that decodes greedily (the call row records what was used).
    """

    run_id: str
    iteration: int
    episode_id: str
    harness_commit: str
    adapter_tag: str | None
    max_calls: int = 32
    max_tokens: int = 4096
    seed: int | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a call was refused, as an HTTP status and an OpenAI-style error."""

    status: int
    code: str
    message: str


class Budget:
    """The live spend of one episode; reservations are atomic across concurrent calls."""

    def __init__(self, ticket: EpisodeTicket) -> None:
        self.ticket = ticket
        self._lock = threading.Lock()
        self._calls = 0
        self._tokens = 0
        self._reserved = 0

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def tokens(self) -> int:
        return self._tokens

    def reserve(self, wanted_tokens: int) -> tuple[int, int] | Refusal:
        """Claim a call slot and up to ``wanted_tokens`` completion tokens.

        Returns ``(call_index, granted_tokens)``, or a refusal when the episode has spent
        its calls or tokens. Tokens are reserved before generation so that concurrent calls
        of one episode cannot overshoot the budget together.
        """
        with self._lock:
            if self._calls >= self.ticket.max_calls:
                return Refusal(
                    429,
                    "call_budget_exceeded",
                    f"episode {self.ticket.episode_id} has used all "
                    f"{self.ticket.max_calls} model calls",
                )
            left = self.ticket.max_tokens - self._tokens - self._reserved
            if left <= 0:
                return Refusal(
                    429,
                    "token_budget_exceeded",
                    f"episode {self.ticket.episode_id} has used its budget of "
                    f"{self.ticket.max_tokens} completion tokens",
                )
            granted = min(wanted_tokens, left)
            index = self._calls
            self._calls += 1
            self._reserved += granted
            return index, granted

    def settle(self, granted: int, used: int) -> None:
        """Replace a reservation of ``granted`` tokens by the ``used`` ones."""
        with self._lock:
            self._reserved -= granted
            self._tokens += used
