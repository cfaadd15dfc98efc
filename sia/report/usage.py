"""Tokens and cost per phase of the loop.

Two sources, both recorded: the policy model's calls (the gateway's ``calls`` table,
token ids per call) and the model-backed agents' calls (``AgentCalled`` events, with the
provider's token counts and a price when one is on file). A policy call belongs to the
phase of its episode's purpose; an agent call to the phase the run was in when it was
recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ledger import Recorder
from ledger.records import EpisodeRow
from statemachine import events as ev
from statemachine.state import Envelope

__all__ = ["PHASE_ORDER", "PhaseUsage", "phase_usage"]

#: Display order; ``other`` holds policy calls whose episode row is not (yet) recorded.
PHASE_ORDER = ("PLAN", "ROLLOUT", "FEEDBACK", "EDIT", "TRAIN", "EVAL", "other")


@dataclass
class PhaseUsage:
    phase: str
    policy_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    agent_calls: int = 0
    agent_input_tokens: int = 0
    agent_output_tokens: int = 0
    agent_cache_read_tokens: int = 0
    agent_cache_write_tokens: int = 0
    cost_usd: float | None = None  # None: no priced agent call in this phase
    unpriced_calls: int = 0  # agent calls with no price on file for their model
    models: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return (
            self.prompt_tokens
            + self.completion_tokens
            + self.agent_input_tokens
            + self.agent_output_tokens
        )


def phase_usage(
    recorder: Recorder,
    run_id: str,
    envs: Iterable[Envelope],
    episodes: Iterable[EpisodeRow],
    iterations: Iterable[int],
    branched_at: int | None,
) -> list[PhaseUsage]:
    """Usage per phase, in loop order; phases with no call at all are left out."""
    usage = {phase: PhaseUsage(phase) for phase in PHASE_ORDER}
    purpose = {(ep.iteration, ep.episode_id): ep.purpose for ep in episodes}
    # One iteration at a time: a call row carries every token id and logprob, and a whole
    # run's worth of them need not sit in memory at once.
    for iteration in iterations:
        for call in recorder.read_calls(run_id, iteration):
            kind = purpose.get((call.iteration, call.episode_id))
            phase = usage[_policy_phase(kind, call.iteration, branched_at)]
            phase.policy_calls += 1
            phase.prompt_tokens += len(call.prompt_ids)
            phase.completion_tokens += len(call.completion_ids)
    current = "PLAN"
    for envelope in envs:
        event = envelope.event
        if isinstance(event, ev.PhaseEntered):
            current = event.phase
        elif isinstance(event, ev.AgentCalled):
            phase = usage[current]
            phase.agent_calls += 1
            phase.agent_input_tokens += event.input_tokens
            phase.agent_output_tokens += event.output_tokens
            phase.agent_cache_read_tokens += event.cache_read_tokens
            phase.agent_cache_write_tokens += event.cache_write_tokens
            if event.cost_usd is None:
                phase.unpriced_calls += 1
            else:
                phase.cost_usd = (phase.cost_usd or 0.0) + event.cost_usd
            if event.model not in phase.models:
                phase.models = sorted([*phase.models, event.model])
    return [u for u in usage.values() if u.policy_calls or u.agent_calls]


def _policy_phase(purpose: str | None, iteration: int, branched_at: int | None) -> str:
    if purpose == "rollout":
        return "ROLLOUT"
    if purpose == "eval":
        return "EVAL"
    if purpose == "smoke":
        # A smoke episode checks an agent's proposed harness while the agent works: the
        # Meta Agent's in the first PLAN of a fresh run, the Feedback Agent's later.
        return "PLAN" if iteration == 0 and branched_at is None else "FEEDBACK"
    return "other"
