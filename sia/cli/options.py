"""Option groups that several commands share, so their names, defaults and help agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from sia.config import AGENTS

__all__ = ["COUNT", "POSITIVE", "SECONDS", "TEMPERATURE", "agent_options"]

F = TypeVar("F", bound=Callable)

# Ranges are click's, so an out-of-range value is a usage error naming the option, before
# anything is read or written.
COUNT = click.IntRange(min=0)
POSITIVE = click.IntRange(min=1)
SECONDS = click.FloatRange(min=0, min_open=True)
TEMPERATURE = click.FloatRange(0, 5)


def agent_options(command: F) -> F:
    """``--meta-agent``, ``--feedback-agent`` and the claude agents' model, URL and key."""
    for option in reversed(
        [
            click.option(
                "--meta-agent",
                type=click.Choice(AGENTS),
                default="offline",
                show_default=True,
                help="Who writes the initial harness: offline (the task's template) or claude.",
            ),
            click.option(
                "--feedback-agent",
                type=click.Choice(AGENTS),
                default="offline",
                show_default=True,
                help="Who chooses edit or train: offline (named rules) or claude "
                "(reads trajectories).",
            ),
            click.option(
                "--agent-model",
                default="claude-sonnet-5-5",
                show_default=True,
                help="Model of claude agents.",
            ),
            click.option(
                "--agent-base-url", default=None, help="API root for claude agents (a proxy)."
            ),
            click.option(
                "--agent-api-key-env",
                default="ANTHROPIC_API_KEY",
                show_default=True,
                help="Environment variable holding the agents' key (read, never stored).",
            ),
        ]
    ):
        command = option(command)
    return command
