"""Trajectories read back from the ledger: each episode with the model calls it made.

The gateway records calls and the runner records episode outcomes in two bulk tables;
this joins them, so a trainer, an exporter or a person sees one episode as one object.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ledger import Recorder
from ledger.records import CallRow, EpisodeRow

__all__ = ["Trajectory", "read_trajectories"]


@dataclass(frozen=True)
class Trajectory:
    """One episode: its outcome and its calls in the order the harness made them."""

    episode: EpisodeRow
    calls: tuple[CallRow, ...]

    @property
    def completion_tokens(self) -> int:
        return sum(len(call.completion_ids) for call in self.calls)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with each call's request decoded from its stored JSON."""
        ep = self.episode
        return {
            "run_id": ep.run_id,
            "iteration": ep.iteration,
            "purpose": ep.purpose,
            "split": ep.split,
            "episode_id": ep.episode_id,
            "item_id": ep.item_id,
            "reward": ep.reward,
            "status": ep.status,
            "reason": ep.reason,
            "answer": ep.answer,
            "reward_detail": json.loads(ep.reward_detail) if ep.reward_detail else None,
            "duration_ms": ep.duration_ms,
            "calls": [
                {
                    "call_index": c.call_index,
                    "request": json.loads(c.messages_json),
                    "completion": c.completion_text,
                    "prompt_ids": list(c.prompt_ids),
                    "completion_ids": list(c.completion_ids),
                    "logprobs": list(c.logprobs),
                    "finish_reason": c.finish_reason,
                    "adapter_tag": c.adapter_tag,
                    "harness_commit": c.harness_commit,
                    "latency_ms": c.latency_ms,
                }
                for c in self.calls
            ],
        }


def read_trajectories(
    recorder: Recorder,
    run_id: str,
    *,
    iteration: int | None = None,
    purpose: str | None = None,
    episode_id: str | None = None,
) -> list[Trajectory]:
    """Every recorded episode of ``run_id`` (filtered), in iteration then episode order."""
    episodes = recorder.read_episodes(run_id, iteration, purpose)
    if episode_id is not None:
        episodes = [ep for ep in episodes if ep.episode_id == episode_id]
    calls: dict[tuple[int, str], list[CallRow]] = defaultdict(list)
    for call in recorder.read_calls(run_id, iteration):
        calls[call.iteration, call.episode_id].append(call)
    return [
        Trajectory(ep, tuple(sorted(calls.get((ep.iteration, ep.episode_id), ()), key=_call_order)))
        for ep in episodes
    ]


def _call_order(call: CallRow) -> int:
    return call.call_index
