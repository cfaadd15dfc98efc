"""Checks a proposed harness must pass before it is committed.

Three stages, cheapest first: the change applies (see :mod:`sia.agents.patches`), the
harness is well-formed (``agent.py`` compiles and defines ``solve``, ``harness.json``
parses), and one smoke episode of it runs to an answer in the sandbox against the policy.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["HarnessCheck", "HarnessValidator", "Verdict", "static_problems"]

ENTRY_POINT = "solve"


@dataclass(frozen=True)
class Verdict:
    """``ok``, or the ``stage`` that failed (``import`` or ``smoke``) and why."""

    ok: bool
    stage: str = ""
    reason: str = ""


class HarnessCheck(Protocol):
    def __call__(self, files: Mapping[str, bytes], *, run_id: str, iteration: int) -> Verdict: ...


class SmokeRunner(Protocol):
    def smoke(
        self, *, run_id: str, iteration: int, harness: Mapping[str, bytes], item_id: str
    ) -> Any: ...


def static_problems(files: Mapping[str, bytes]) -> list[str]:
    """What makes ``files`` unloadable as a harness, without running any of it."""
    problems = []
    if "agent.py" not in files:
        problems.append("agent.py is missing")
    for path, content in sorted(files.items()):
        if path.endswith(".py"):
            try:
                tree = ast.parse(content, filename=path)
            except (SyntaxError, ValueError) as error:
                problems.append(f"{path} does not compile: {error}")
                continue
            if path == "agent.py" and not any(
                isinstance(node, ast.FunctionDef) and node.name == ENTRY_POINT for node in tree.body
            ):
                problems.append(f"agent.py defines no top-level {ENTRY_POINT}() entry point")
        elif path.endswith(".json"):
            try:
                json.loads(content)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                problems.append(f"{path} is not valid JSON: {error}")
    return problems


class HarnessValidator:
    """The real check: static problems first, then one smoke episode per ``smoke_items``.

    Smoke items are train items (``item_ids``, the first ``smoke_items`` of them); the
    episode must finish with status ``ok`` (an answer, whatever its reward).
    """

    def __init__(self, runner: SmokeRunner, item_ids: Sequence[str], *, smoke_items: int = 1):
        if not item_ids:
            raise ValueError("a harness validator needs at least one train item to smoke-test")
        self._runner = runner
        self._items = tuple(item_ids[: max(1, smoke_items)])

    def __call__(self, files: Mapping[str, bytes], *, run_id: str, iteration: int) -> Verdict:
        problems = static_problems(files)
        if problems:
            return Verdict(False, "import", "; ".join(problems))
        for item_id in self._items:
            outcome = self._runner.smoke(
                run_id=run_id, iteration=iteration, harness=files, item_id=item_id
            )
            if outcome.status != "ok":
                return Verdict(
                    False, "smoke", f"episode on {item_id} ended {outcome.status}: {outcome.reason}"
                )
        return Verdict(True)
