"""Harness edit operators for chess harnesses (``chess-v1``): switch on the board tools.

The chess template keeps its tools behind flags in a ``"tools"`` object of ``harness.json``
(all off at first), so turning one on is a one-line config change like every other
operator's. Each operator applies only when ``agent.py`` reads the keys it sets and the
tool is still off, so it never touches an arith or charges harness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sia.agents.operators import Operator, SwitchExtraction

__all__ = ["CHESS_OPERATORS", "EnableTool", "LegalMoveExtraction", "LegalMoves", "MateCheck"]

TOOLS_KEY = "tools"


@dataclass(frozen=True)
class EnableTool(Operator):
    """Turn on ``tools.<tool>`` in ``harness.json``; subclasses name the tool."""

    name: ClassVar[str] = "tool"
    effect: ClassVar[str] = "a board tool the harness offers but had switched off"
    reads: ClassVar[tuple[str, ...]] = (TOOLS_KEY,)
    tool: ClassVar[str] = ""

    def applies(self, files: Mapping[str, bytes]) -> bool:
        # The tool's own key must be read too, or the flag would change nothing.
        source = files.get("agent.py", b"").decode("utf-8", errors="replace")
        reads_tool = f'"{self.tool}"' in source or f"'{self.tool}'" in source
        return bool(self.tool) and reads_tool and super().applies(files)

    def _applies(self, config: dict[str, Any]) -> bool:
        tools = config.get(TOOLS_KEY, {})
        return isinstance(tools, dict) and not tools.get(self.tool)

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config[TOOLS_KEY] = {**config.get(TOOLS_KEY, {}), self.tool: True}
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Turn on the {self.tool} tool"


@dataclass(frozen=True)
class LegalMoves(EnableTool):
    """List the position's legal moves (SAN) in the prompt, so the model picks, not invents."""

    name: ClassVar[str] = "tool-legal-moves"
    effect: ClassVar[str] = "fewer illegal or malformed moves: the model copies one it is shown"
    tool: ClassVar[str] = "legal_moves"

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return "List the legal moves (SAN) under the position in the prompt"


@dataclass(frozen=True)
class MateCheck(EnableTool):
    """Replay proposed moves on the board and keep one that mates, resampling if none does."""

    name: ClassVar[str] = "tool-mate-check"
    effect: ClassVar[str] = "a mating move kept whenever the model proposes one anywhere"
    tool: ClassVar[str] = "mate_check"

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return "Check each proposed move for mate with python-chess; keep one that mates"


@dataclass(frozen=True)
class LegalMoveExtraction(SwitchExtraction):
    """Read the answer as the first token of the reply that is a legal move in the position.

    A small model echoes squares and pieces from the question ("the queen on h5 ..."), so
    the first move-shaped token is often not a move at all.
    """

    name: ClassVar[str] = "legal-move-extraction"
    effect: ClassVar[str] = "answers read as the first legal move the reply names"
    target: str = "legal_move"


#: The chess operators in the order the offline agent should try them: cheap prompt help
#: first, then extraction, then the check that may cost extra model calls.
CHESS_OPERATORS: tuple[Operator, ...] = (LegalMoves(), LegalMoveExtraction(), MateCheck())
