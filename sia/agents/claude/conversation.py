"""An agent's tool-use loop: model reply, tool results, again, until a finishing tool
accepts an answer. Every reply is recorded as an :class:`~statemachine.events.AgentCalled`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sia.agents.claude.client import ClaudeClient, Reply
from sia.agents.errors import AgentError
from statemachine.events import AgentCalled, Event

__all__ = ["Conversation", "Tool", "ToolRefused", "as_json"]

#: Tool output longer than this is cut, so one large file cannot flood the context.
MAX_TOOL_OUTPUT = 20_000


class ToolRefused(AgentError):
    """A tool call the agent should correct: returned to the model as an error result."""


@dataclass(frozen=True)
class Tool:
    """A tool the model may call. ``run(input)`` returns the result text, or raises
    :class:`ToolRefused`; a finishing tool also ends the conversation when it succeeds."""

    name: str
    description: str
    schema: dict[str, Any]
    run: Callable[[dict[str, Any]], str]
    finishes: bool = False

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "input_schema": self.schema}


class Conversation:
    """One question to the model, answered through tools within ``max_turns`` replies."""

    def __init__(
        self,
        client: ClaudeClient,
        *,
        agent: str,
        iteration: int,
        system: str,
        tools: list[Tool],
        events: list[Event],
    ) -> None:
        self._client = client
        self._agent, self._iteration = agent, iteration
        self._system = system
        self._tools = {tool.name: tool for tool in tools}
        self._events = events
        self.messages: list[dict[str, Any]] = []

    def run(self, opening: str) -> None:
        """Ask ``opening``; returns once a finishing tool succeeded. Raises AgentError when
        ``max_turns`` replies pass without one."""
        finishing = sorted(name for name, tool in self._tools.items() if tool.finishes)
        self.messages = [{"role": "user", "content": opening}]
        turns = self._client.settings.max_turns
        for _ in range(turns):
            reply = self._client.reply(
                system=self._system,
                messages=self.messages,
                tools=[tool.spec() for tool in self._tools.values()],
            )
            self._record(reply)
            self.messages.append({"role": "assistant", "content": reply.content})
            if not reply.tool_uses:
                nudge = f"Finish by calling {' or '.join(finishing)}."
                self.messages.append({"role": "user", "content": nudge})
                continue
            results, done = [], False
            for use in reply.tool_uses:
                text, failed = self._call(use.name, use.input)
                done = done or (not failed and self._tools[use.name].finishes)
                result = {"type": "tool_result", "tool_use_id": use.id, "content": text}
                if failed:
                    result["is_error"] = True
                results.append(result)
            self.messages.append({"role": "user", "content": results})
            if done:
                return
        raise AgentError(
            f"{self._agent} gave no accepted answer in {turns} replies "
            f"(it must call {' or '.join(finishing)})"
        )

    def _call(self, name: str, payload: dict[str, Any]) -> tuple[str, bool]:
        tool = self._tools.get(name)
        if tool is None:
            return f"no tool named {name!r}; tools: {', '.join(self._tools)}", True
        try:
            text = tool.run(payload)
        except ToolRefused as refusal:
            return str(refusal), True
        except (KeyError, TypeError, ValueError) as error:
            # A malformed input (a missing field, a wrong type): tell the model, go on.
            return f"bad input for {name}: {type(error).__name__}: {error}", True
        if len(text) > MAX_TOOL_OUTPUT:
            text = text[:MAX_TOOL_OUTPUT] + f"\n… cut at {MAX_TOOL_OUTPUT} characters"
        return text, False

    def _record(self, reply: Reply) -> None:
        self._events.append(
            AgentCalled(
                iteration=self._iteration,
                agent=self._agent,
                model=reply.model,
                input_tokens=reply.input_tokens,
                output_tokens=reply.output_tokens,
                cache_read_tokens=reply.cache_read_tokens,
                cache_write_tokens=reply.cache_write_tokens,
                cost_usd=reply.cost_usd,
                latency_ms=round(reply.latency_ms, 1),
                stop_reason=reply.stop_reason,
                tools=tuple(use.name for use in reply.tool_uses),
            )
        )


def as_json(value: Any) -> str:
    """Tool output as compact, stable JSON."""
    return json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False)
