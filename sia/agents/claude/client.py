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
#: An API error message is cut here: one line of the run's output, not a page.
_MAX_ERROR_CHARS = 300


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
    # Five retries ride out about 15 s of overload (the SDK waits 0.5 s, doubling to 8 s,
    # or what retry-after says); a longer outage stops the run, which `sia resume` continues.
    max_retries: int = field(
        default=5,
        metadata={
            "help": "retries of a call after 408, 409, 429, 5xx (529 overloaded) or no "
            "connection; waits honour retry-after, else back off from 0.5 s, doubling, to 8 s"
        },
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise AgentError("the Claude model id must not be empty")
        for name in ("max_tokens", "max_turns", "max_patch_attempts"):
            if getattr(self, name) < 1:
                raise AgentError(f"ClaudeSettings.{name} must be >= 1")
        if self.timeout_s <= 0:
            raise AgentError("ClaudeSettings.timeout_s must be positive")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise AgentError(
                f"ClaudeSettings.max_retries must be an integer, not {self.max_retries!r}"
            )
        if self.max_retries < 0:
            raise AgentError("ClaudeSettings.max_retries must be >= 0")


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
            max_retries=settings.max_retries,
            http_client=http_client,
        )
        self._errors = (anthropic.APIError,)
        self._status_error = anthropic.APIStatusError

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
            raise AgentError(self._describe(error)) from None
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

    def _describe(self, error: Exception) -> str:
        """One line: the HTTP status, the SDK's error type, the API's message and how many
        requests were made, without the API key even when the server echoed it."""
        if isinstance(error, self._status_error):
            message = getattr(error, "api_message", None) or _body_text(error.body)
            what = f"{type(error).__name__} (HTTP {error.status_code}): {message}"
        else:
            what = f"{type(error).__name__}: {error}"
        # Redacted before it is cut, so that no prefix of the key survives the cut.
        what = " ".join(_redact(what, self._client.api_key).split())
        if len(what) > _MAX_ERROR_CHARS:
            what = what[:_MAX_ERROR_CHARS] + "…"
        # The SDK numbers its attempts in a header of the request it made last.
        request = getattr(error, "request", None)
        count = request.headers.get("x-stainless-retry-count", "") if request is not None else ""
        tries = f" (after {int(count) + 1} requests)" if count.isdigit() else ""
        return f"Claude call failed: {what}{tries}"


def _body_text(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(body) if body else "no error message"


def _redact(message: str, key: str | None) -> str:
    # A server may echo the key it refused; it must not reach logs or the ledger through us.
    return message.replace(key, "[redacted]") if key else message
