"""Claude through the ``anthropic`` SDK: one reply per call, with its usage and cost.

The API key is read from the environment variable the settings name, when the client is
made, and handed to the SDK only: it is never stored in settings, events, commits or logs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sia.agents.claude.pricing import cost_usd
from sia.agents.errors import AgentError

__all__ = ["DEFAULT_MODEL", "ClaudeClient", "ClaudeSettings", "Reply", "ToolUse"]

#: The current Sonnet: the default for both agents.
DEFAULT_MODEL = "claude-sonnet-5-5"


@dataclass(frozen=True)
class ClaudeSettings:
    """How the Claude agents reach their model. Stored in the run config (no secrets)."""

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Claude model id"})
    api_key_env: str = field(
        default="ANTHROPIC_API_KEY",
        metadata={"help": "environment variable holding the API key (never stored)"},
    )
    base_url: str | None = field(
        default=None, metadata={"help": "API root (a proxy or gateway); default: Anthropic's"}
    )
    max_tokens: int = field(default=4096, metadata={"help": "reply budget per call"})
    max_turns: int = field(default=16, metadata={"help": "model calls per agent answer"})
    max_patch_attempts: int = field(
        default=3, metadata={"help": "rejected patches before the Feedback Agent gives up"}
    )
    timeout_s: float = field(default=300.0, metadata={"help": "per-call HTTP timeout"})

    def __post_init__(self) -> None:
        if not self.model:
            raise AgentError("the Claude model id must not be empty")
        for name in ("max_tokens", "max_turns", "max_patch_attempts"):
            if getattr(self, name) < 1:
                raise AgentError(f"ClaudeSettings.{name} must be >= 1")
        if self.timeout_s <= 0:
            raise AgentError("ClaudeSettings.timeout_s must be positive")


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One model reply: its content blocks as sent back next turn, and what it cost."""

    content: list[dict[str, Any]]
    tool_uses: tuple[ToolUse, ...]
    text: str
    stop_reason: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None
    latency_ms: float


class ClaudeClient:
    """A thin wrapper over ``anthropic.Anthropic().messages.create``.

    ``http_client`` (an ``httpx2.Client``) is for tests and proxies; by default the SDK
    makes its own.
    """

    def __init__(self, settings: ClaudeSettings, *, http_client: Any = None) -> None:
        import anthropic

        key = os.environ.get(settings.api_key_env, "")
        if not key:
            raise AgentError(
                f"the Claude agents need an Anthropic API key in ${settings.api_key_env}"
            )
        self.settings = settings
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=2,
            http_client=http_client,
        )
        self._errors = (anthropic.APIError,)

    def reply(
        self, *, system: str, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]
    ) -> Reply:
        """One call; an API or transport failure becomes an :class:`AgentError`."""
        start = time.perf_counter()
        try:
            message = self._client.messages.create(
                model=self.settings.model,
                max_tokens=self.settings.max_tokens,
                system=system,
                messages=list(messages),
                tools=list(tools),
            )
        except self._errors as error:
            raise AgentError(f"Claude call failed: {type(error).__name__}: {error}") from None
        latency = (time.perf_counter() - start) * 1000
        usage = message.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_write = usage.cache_creation_input_tokens or 0
        # Thinking blocks must go back verbatim (with their signatures) on the next turn.
        content = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
        return Reply(
            content=content,
            tool_uses=tuple(
                ToolUse(block.id, block.name, dict(block.input))
                for block in message.content
                if block.type == "tool_use"
            ),
            text="\n".join(block.text for block in message.content if block.type == "text"),
            stop_reason=message.stop_reason or "",
            model=message.model or self.settings.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
            cost_usd=cost_usd(
                self.settings.model,
                usage.input_tokens,
                usage.output_tokens,
                cache_read,
                cache_write,
            ),
            latency_ms=latency,
        )
