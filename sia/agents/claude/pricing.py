"""List prices of Claude models, for the cost recorded with every agent call.

US dollars per million tokens, from Anthropic's published price list. A model that is not
listed is recorded with its token counts and no cost (``None``), never a guessed one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PRICES", "Price", "cost_usd"]


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float  # five-minute cache writes


PRICES: dict[str, Price] = {
    "claude-sonnet-5-5": Price(2.0, 10.0, 0.20, 2.50),
    "claude-sonnet-5": Price(2.0, 10.0, 0.20, 2.50),
    "claude-haiku-4-5": Price(1.0, 5.0, 0.10, 1.25),
}


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_read_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> float | None:
    """The list price of one call, or ``None`` when ``model`` has no price on file."""
    price = PRICES.get(model)
    if price is None:
        return None
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_read_tokens * price.cache_read
        + cache_write_tokens * price.cache_write
    )
    return total / 1_000_000
