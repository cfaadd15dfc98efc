"""The Claude Feedback Agent: reads train trajectories and the harness through tools, then
either proposes a validated patch (edit) or names an RL algorithm (train).

What it can read is fenced by its tools: episodes of this iteration's train rollout, the
reference answers of those train items, the best harness's files, and the run's history.
Nothing of the validation or test splits is reachable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sia.agents.claude.client import ClaudeClient
from sia.agents.claude.conversation import Conversation, Tool, ToolRefused, as_json
from sia.agents.claude.prompts import FEEDBACK_SYSTEM, history_lines
from sia.agents.diagnostics import Thresholds, diagnose
from sia.agents.operators import read_config
from sia.agents.patches import PatchError, apply_patch, patched
from sia.agents.validation import HarnessCheck, Verdict
from sia.ports import FeedbackContext
from sia.trajectories import Trajectory
from statemachine.events import DecisionMade, Event, PatchRejected

__all__ = ["ClaudeFeedbackAgent"]

PATCH_OPERATOR = "claude-patch"

#: Trajectories of one iteration's train rollout.
TrajectoryReader = Callable[[str, int], Sequence[Trajectory]]


@dataclass
class _Session:
    context: FeedbackContext
    trajectories: dict[str, Trajectory]
    patch: dict[str, Any] | None = None  # the last patch that passed validation
    attempts: int = 0
    rejected: int = 0
    read: list[str] = field(default_factory=list)  # episode ids, in the order read
    decision: DecisionMade | None = None


class ClaudeFeedbackAgent:
    """A :class:`~sia.ports.FeedbackAgent` that asks Claude, with tools.

    ``trajectories(run_id, iteration)`` reads the iteration's train rollout from the ledger;
    ``answers`` maps train item ids to reference answers (train only: the agent may see
    why a train answer was wrong); ``check`` validates a patched harness before it may be
    proposed (:class:`~sia.agents.validation.HarnessValidator`).
    """

    name = "claude-feedback"

    def __init__(
        self,
        client: ClaudeClient,
        *,
        trajectories: TrajectoryReader,
        answers: Mapping[str, str],
        check: HarnessCheck,
        algorithms: Mapping[str, str],
        thresholds: Thresholds | None = None,
    ) -> None:
        self._client = client
        self._trajectories = trajectories
        self._answers = dict(answers)
        self._check = check
        self._algorithms = dict(algorithms)
        self._thresholds = thresholds or Thresholds()
        self._events: list[Event] = []

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def decide(self, context: FeedbackContext) -> DecisionMade:
        self._events = []
        episodes = self._trajectories(context.run_id, context.iteration)
        session = _Session(context, {t.episode.episode_id: t for t in episodes})
        diag = diagnose(
            context.rollout, context.history, read_config(context.harness), self._thresholds
        )
        conversation = Conversation(
            self._client,
            agent=self.name,
            iteration=context.iteration,
            system=FEEDBACK_SYSTEM,
            tools=self._tools(session, diag.to_dict()),
            events=self._events,
        )
        conversation.run(self._opening(context, diag.to_dict(), len(episodes)))
        assert session.decision is not None  # the finishing tool sets it
        return session.decision

    # ---- what the model is told first -----------------------------------------------------

    def _opening(self, context: FeedbackContext, diag: dict[str, Any], episodes: int) -> str:
        levers = " or ".join(sorted(context.levers))
        files = "\n".join(
            f"- {path} ({len(content)} bytes)" for path, content in sorted(context.harness.items())
        )
        algorithms = "\n".join(f"- {name}: {text}" for name, text in self._algorithms.items())
        return (
            f"Iteration {context.iteration} of run {context.run_id}. Choose {levers}.\n\n"
            f"Diagnostics of this iteration's train rollout ({episodes} episodes):\n"
            f"{as_json(diag)}\n\n"
            f"History (val score per iteration):\n{history_lines(context.history)}\n\n"
            f"Files of the best harness so far:\n{files}\n\n"
            f"RL algorithms you may name when you train:\n{algorithms}\n\n"
            "Read trajectories and files as you need, then call decide."
        )

    # ---- tools ----------------------------------------------------------------------------

    def _tools(self, session: _Session, diag: dict[str, Any]) -> list[Tool]:
        return [
            Tool(
                "list_trajectories",
                "Episodes of this iteration's train rollout: id, item, reward, status, reason, "
                "final reply (cut to 200 characters).",
                {
                    "type": "object",
                    "properties": {
                        "outcome": {"type": "string", "enum": ["all", "failed", "succeeded"]},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                        "offset": {"type": "integer", "minimum": 0},
                    },
                },
                lambda payload: self._list(session, payload),
            ),
            Tool(
                "read_trajectory",
                "One episode in full: the item's question and reference answer, every model "
                "call (messages sent, reply, finish reason), the reward and the status.",
                {
                    "type": "object",
                    "properties": {"episode_id": {"type": "string"}},
                    "required": ["episode_id"],
                },
                lambda payload: self._read(session, payload),
            ),
            Tool(
                "read_harness_file",
                "The text of one file of the best harness.",
                {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
                lambda payload: self._file(session, payload),
            ),
            Tool(
                "propose_patch",
                "Propose a harness change as a unified diff against the best harness "
                "(--- a/PATH, +++ b/PATH, @@ hunks with exact context). It is applied, checked "
                "(files compile, agent.py defines solve) and run on one train item; the result "
                "says whether it passed. The last patch that passed is the one an edit commits.",
                {
                    "type": "object",
                    "properties": {
                        "diff": {"type": "string"},
                        "summary": {"type": "string", "description": "one line: what changes"},
                    },
                    "required": ["diff", "summary"],
                },
                lambda payload: self._propose(session, payload),
            ),
            Tool(
                "decide",
                "Your decision. lever 'edit' commits your last passing patch; 'train' trains a "
                "LoRA adapter with the named algorithm on this iteration's rollouts. Give the "
                "evidence you relied on, every lever you weighed with a score in [0, 1] and "
                "why, and the effect you expect on the validation score.",
                {
                    "type": "object",
                    "properties": {
                        "lever": {"type": "string", "enum": sorted(session.context.levers)},
                        "rationale": {"type": "string"},
                        "evidence": {"type": "array", "items": {"type": "string"}},
                        "alternatives": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "lever": {"type": "string"},
                                    "score": {"type": "number"},
                                    "why": {"type": "string"},
                                },
                                "required": ["lever", "score", "why"],
                            },
                        },
                        "algorithm": {"type": "string", "enum": sorted(self._algorithms)},
                        "algorithm_reason": {"type": "string"},
                        "expected_effect": {"type": "string"},
                    },
                    "required": ["lever", "rationale", "alternatives", "expected_effect"],
                },
                lambda payload: self._decide(session, diag, payload),
                finishes=True,
            ),
        ]

    def _list(self, session: _Session, payload: dict[str, Any]) -> str:
        outcome = payload.get("outcome", "all")
        limit, offset = int(payload.get("limit", 20)), int(payload.get("offset", 0))
        rows = []
        for trajectory in session.trajectories.values():
            episode = trajectory.episode
            success = (episode.reward or 0) > 0 and episode.status == "ok"
            if (outcome == "failed" and success) or (outcome == "succeeded" and not success):
                continue
            last = trajectory.calls[-1].completion_text if trajectory.calls else ""
            rows.append(
                {
                    "episode_id": episode.episode_id,
                    "item_id": episode.item_id,
                    "reward": episode.reward,
                    "status": episode.status,
                    "reason": episode.reason,
                    "calls": len(trajectory.calls),
                    "final_reply": last[:200],
                }
            )
        return as_json({"total": len(rows), "episodes": rows[offset : offset + limit]})

    def _read(self, session: _Session, payload: dict[str, Any]) -> str:
        episode_id = str(payload["episode_id"])
        trajectory = session.trajectories.get(episode_id)
        if trajectory is None:
            raise ToolRefused(f"no episode {episode_id!r} in this iteration's train rollout")
        session.read.append(episode_id)
        data = trajectory.to_dict()
        for call in data["calls"]:
            # Token ids and logprobs are for trainers; they only cost the agent context.
            for key in ("prompt_ids", "completion_ids", "logprobs"):
                call.pop(key, None)
        data["reference_answer"] = self._answers.get(trajectory.episode.item_id)
        return as_json(data)

    def _file(self, session: _Session, payload: dict[str, Any]) -> str:
        path = str(payload["path"])
        files = session.context.harness
        content = files.get(path)
        if content is None:
            raise ToolRefused(f"no file {path!r}; files: {', '.join(sorted(files))}")
        try:
            return content.decode()
        except UnicodeDecodeError:
            raise ToolRefused(f"{path} is not text") from None

    def _propose(self, session: _Session, payload: dict[str, Any]) -> str:
        diff, summary = str(payload["diff"]), str(payload["summary"]).strip()
        attempts = self._client.settings.max_patch_attempts
        if session.attempts >= attempts:
            raise ToolRefused(f"no patch attempts left ({attempts} used); decide now")
        session.attempts += 1
        context = session.context
        changes, verdict = self._validate(context, diff)
        if not verdict.ok:
            session.rejected += 1
            self._events.append(
                PatchRejected(
                    iteration=context.iteration,
                    agent=self.name,
                    attempt=session.attempts,
                    stage=verdict.stage,
                    reason=verdict.reason,
                    patch=diff,
                )
            )
            left = attempts - session.attempts
            raise ToolRefused(
                f"patch rejected at {verdict.stage}: {verdict.reason} ({left} attempt(s) left)"
            )
        session.patch = {
            "summary": summary or "Claude's patch",
            "operator": PATCH_OPERATOR,
            "files": changes,
            "patch": diff,
        }
        return (
            f"patch passed: applies, compiles and ran one train episode to an answer. "
            f"Files changed: {', '.join(sorted(changes))}. Call decide with lever 'edit' to "
            "commit it."
        )

    def _validate(
        self, context: FeedbackContext, diff: str
    ) -> tuple[dict[str, str | None], Verdict]:
        """The changes ``diff`` makes, and whether the patched harness passes the checks."""
        try:
            changes = apply_patch(context.harness, diff)
        except PatchError as error:
            return {}, Verdict(False, "apply", str(error))
        files = patched(context.harness, changes)
        return changes, self._check(files, run_id=context.run_id, iteration=context.iteration)

    def _decide(self, session: _Session, diag: dict[str, Any], payload: dict[str, Any]) -> str:
        context = session.context
        lever = str(payload["lever"])
        if lever not in context.levers:
            raise ToolRefused(f"lever {lever!r} is not allowed here: {sorted(context.levers)}")
        algorithm = payload.get("algorithm")
        if lever == "edit" and session.patch is None:
            raise ToolRefused("an edit needs a patch that passed propose_patch first")
        if lever == "train" and algorithm not in self._algorithms:
            raise ToolRefused(f"train needs an algorithm, one of {', '.join(self._algorithms)}")
        alternatives = tuple(
            {
                "lever": str(alt["lever"]),
                "score": float(alt["score"]),
                "allowed": str(alt["lever"]) in context.levers,
                "why": str(alt["why"]),
            }
            for alt in payload["alternatives"]
        )
        session.decision = DecisionMade(
            iteration=context.iteration,
            lever=lever,
            agent=self.name,
            rationale=str(payload["rationale"]).strip(),
            diagnostics={
                **diag,
                "evidence": [str(item) for item in payload.get("evidence", [])],
                "trajectories_read": list(dict.fromkeys(session.read)),
                "patches_rejected": session.rejected,
                "thresholds": asdict(self._thresholds),
                "model": self._client.settings.model,
            },
            alternatives=alternatives,
            rules=(),
            algorithm=str(algorithm) if lever == "train" else None,
            algorithm_reason=str(payload.get("algorithm_reason", "")) if lever == "train" else "",
            expected_effect=str(payload["expected_effect"]).strip(),
            edit=session.patch if lever == "edit" else None,
        )
        return "decision recorded"
