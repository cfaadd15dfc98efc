"""Meta and Feedback agents backed by Claude (``anthropic`` SDK), with tools."""

from sia.agents.claude.client import DEFAULT_MODEL, ClaudeClient, ClaudeSettings
from sia.agents.claude.feedback import ClaudeFeedbackAgent
from sia.agents.claude.meta import ClaudeMetaAgent
from sia.agents.claude.pricing import PRICES, cost_usd

__all__ = [
    "DEFAULT_MODEL",
    "PRICES",
    "ClaudeClient",
    "ClaudeFeedbackAgent",
    "ClaudeMetaAgent",
    "ClaudeSettings",
    "cost_usd",
]
