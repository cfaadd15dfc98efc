"""The Claude Meta Agent: writes the initial harness from the task's description and
template, and keeps rewriting it until it passes the harness checks."""

from __future__ import annotations

from typing import Any

from sia.agents.claude.client import ClaudeClient
from sia.agents.claude.conversation import Conversation, Tool, ToolRefused
from sia.agents.claude.prompts import META_SYSTEM
from sia.agents.patches import creation_diff
from sia.agents.validation import HarnessCheck
from sia.ports import HarnessDraft, TaskSource
from statemachine.events import Event, PatchRejected

__all__ = ["ClaudeMetaAgent"]


class ClaudeMetaAgent:
    """A :class:`~sia.ports.MetaAgent` that asks Claude to write the harness."""

    name = "claude-meta"

    def __init__(self, client: ClaudeClient, *, check: HarnessCheck) -> None:
        self._client = client
        self._check = check
        self._events: list[Event] = []

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def initial_harness(self, task: TaskSource, *, run_id: str) -> HarnessDraft:
        self._events = []
        drafts: list[HarnessDraft] = []
        attempts = [0]

        def write(payload: dict[str, Any]) -> str:
            files = {str(path): str(text).encode() for path, text in payload["files"].items()}
            attempts[0] += 1
            verdict = self._check(files, run_id=run_id, iteration=0)
            if not verdict.ok:
                self._events.append(
                    PatchRejected(
                        iteration=0,
                        agent=self.name,
                        attempt=attempts[0],
                        stage=verdict.stage,
                        reason=verdict.reason,
                        patch=creation_diff(files),
                    )
                )
                raise ToolRefused(f"harness rejected at {verdict.stage}: {verdict.reason}")
            rationale = str(payload["rationale"]).strip()
            drafts.append(HarnessDraft(files=files, rationale=rationale))
            return "harness accepted"

        conversation = Conversation(
            self._client,
            agent=self.name,
            iteration=0,
            system=META_SYSTEM,
            tools=[
                Tool(
                    "write_harness",
                    "Submit every file of the harness (path → full text) and a rationale whose "
                    "first line is a one-line summary.",
                    {
                        "type": "object",
                        "properties": {
                            "files": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                            "rationale": {"type": "string"},
                        },
                        "required": ["files", "rationale"],
                    },
                    write,
                    finishes=True,
                )
            ],
            events=self._events,
        )
        conversation.run(_opening(task))
        return drafts[-1]


def _opening(task: TaskSource) -> str:
    template = task.harness_template()
    shown = []
    for path, content in sorted(template.items()):
        try:
            shown.append(f"--- {path}\n{content.decode()}")
        except UnicodeDecodeError:
            shown.append(f"--- {path}\n(binary, {len(content)} bytes)")
    files = "\n\n".join(shown) or "(the task ships no template)"
    return (
        f"Task {task.id}.\n\n{task.description}\n\n"
        f"The task's template harness:\n\n{files}\n\n"
        "Write the initial harness with write_harness."
    )
