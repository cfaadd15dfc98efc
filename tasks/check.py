"""``check_task``: verify a task against the contract in :mod:`tasks.base`.

Run it on every new task (the bundled ones are checked in the test suite). Every check runs
even after another failed, so one call reports everything that is wrong; only a malformed
split layout stops the checks that would read it.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tasks.base import SPLITS, Item, Splits, Task
from tasks.errors import TaskCheckFailed

__all__ = ["LABEL_KEYS", "check_task"]

#: Keys that name a label; a public item carrying one leaks it whatever its value.
LABEL_KEYS = frozenset({"answer", "answers", "label", "target", "solution", "gold", "expected"})

_VERSIONED_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]*-v[0-9]+$")
_WRONG_ANSWERS = ("", "\x00 not an answer \x00")


@dataclass(frozen=True)
class _Options:
    seeds: tuple[int, ...]
    sample: int


Check = Callable[[Task, Splits, _Options], list[str]]


def check_task(task: Task, *, seeds: Iterable[int] = (0, 1), sample: int = 20) -> tuple[str, ...]:
    """Run every check; return their names, or raise :class:`TaskCheckFailed` listing failures.

    ``seeds`` are the extra seeds whose splits must be reproducible (the task's own seed is
    always checked); ``sample`` bounds how many items per split the reward is called on.
    """
    try:
        splits = task.splits(task.seed)
    except Exception as exc:  # a task that cannot even build its splits fails every check
        raise TaskCheckFailed(f"task {task.id}: splits({task.seed}) raised {exc!r}") from exc
    options = _Options(tuple(seeds), sample)
    problems: list[str] = []
    names = []
    wanted = getattr(task, "contract_checks", None)
    for name, check in _CHECKS:
        if wanted is not None and name not in wanted:
            continue
        names.append(name)
        try:
            found = check(task, splits, options)
        except Exception as exc:
            found = [f"raised {exc!r}"]
        problems.extend(f"{name}: {p}" for p in found)
        if found and name == "splits-shape":
            break  # the remaining checks read the splits and would only repeat this failure
    if problems:
        raise TaskCheckFailed(
            f"task {task.id} fails {len(problems)} check(s): " + "; ".join(problems)
        )
    return tuple(names)


def _identity(task: Task, splits: Splits, _: _Options) -> list[str]:
    problems = []
    if not isinstance(task.id, str) or not _VERSIONED_ID.match(task.id):
        problems.append(f"id {task.id!r} is not of the form <name>-v<N>")
    if not isinstance(task.description, str) or not task.description.strip():
        problems.append("description is empty")
    return problems


def _shape(task: Task, splits: Splits, _: _Options) -> list[str]:
    problems = []
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        names = sorted(splits) if isinstance(splits, dict) else type(splits).__name__
        return [f"splits must be exactly {list(SPLITS)}, got {names}"]
    for split in SPLITS:
        items = splits[split]
        if not items:
            problems.append(f"split {split} is empty")
        bad = [it for it in items if not isinstance(it, Item)]
        if bad:
            problems.append(f"split {split} holds {len(bad)} non-Item value(s)")
        ids = [it.id for it in items if isinstance(it, Item)]
        if len(set(ids)) != len(ids):
            problems.append(f"split {split} repeats item ids")
    return problems


def _deterministic(task: Task, splits: Splits, options: _Options) -> list[str]:
    problems = []
    for seed in dict.fromkeys((task.seed, *options.seeds)):
        if task.splits(seed) != task.splits(seed):
            problems.append(f"splits({seed}) differs between two calls")
    for split in SPLITS:
        if task.items(split) != splits[split]:
            problems.append(f"items({split!r}) differs from splits({task.seed})[{split!r}]")
        if task.item_ids(split) != [it.id for it in splits[split]]:
            problems.append(f"item_ids({split!r}) differs from the ids of items({split!r})")
    return problems


def _disjoint(task: Task, splits: Splits, _: _Options) -> list[str]:
    problems = []
    for i, first in enumerate(SPLITS):
        for second in SPLITS[i + 1 :]:
            ids = {it.id for it in splits[first]} & {it.id for it in splits[second]}
            prompts = {it.prompt for it in splits[first]} & {it.prompt for it in splits[second]}
            if ids:
                problems.append(f"{first} and {second} share {len(ids)} item id(s)")
            if prompts:
                problems.append(f"{first} and {second} share {len(prompts)} prompt(s)")
    return problems


def _no_leakage(task: Task, splits: Splits, _: _Options) -> list[str]:
    problems = []
    for split in SPLITS:
        for item in splits[split]:
            public = task.public_item(item.id)
            problem = _leak(item, public)
            if problem:
                problems.append(f"{split} item {item.id}: {problem}")
                if len(problems) >= 5:
                    return problems
    return problems


def _leak(item: Item, public: Any) -> str | None:
    if not isinstance(public, dict):
        return f"public_item returned {type(public).__name__}, not dict"
    if public.get("id") != item.id:
        return "public_item does not carry the item's id"
    try:
        json.dumps(public)
    except (TypeError, ValueError):
        return "public_item is not JSON-serialisable"
    labels = sorted(LABEL_KEYS & {str(k).lower() for k in public})
    if labels:
        return f"public_item has label key(s) {labels}"
    answer = item.answer.strip()
    if answer and any(str(v).strip() == answer for v in _leaves(public)):
        return "public_item holds the answer as a value"
    return None


def _leaves(value: Any) -> Iterable[Any]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _reward_range(task: Task, splits: Splits, options: _Options) -> list[str]:
    problems = []
    for split in SPLITS:
        for item in splits[split][: options.sample]:
            right = task.reward(item, item.answer)
            if not _is_unit(right) or (task.answer_is_best and right != 1.0):
                problems.append(f"item {item.id}: its own answer scores {right!r}, not 1.0")
            elif right <= 0.0:
                problems.append(f"item {item.id}: its own answer scores {right!r}")
            for wrong in _WRONG_ANSWERS:
                score = task.reward(item, wrong)
                if not _is_unit(score) or (_is_unit(right) and score >= right) or score >= 1.0:
                    problems.append(f"item {item.id}: answer {wrong!r} scores {score!r}")
            if len(problems) >= 5:
                return problems
    return problems


def _is_unit(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


def _template(task: Task, splits: Splits, _: _Options) -> list[str]:
    files = task.harness_template()
    problems = [f"missing {name}" for name in ("agent.py", "harness.json") if name not in files]
    problems += [
        f"{path} is not bytes" for path, data in files.items() if not isinstance(data, bytes)
    ]
    if problems:
        return problems
    try:
        config = json.loads(files["harness.json"])
    except ValueError as exc:
        return [f"harness.json is not JSON ({exc})"]
    if not isinstance(config, dict):
        problems.append("harness.json is not a JSON object")
    try:
        module = ast.parse(files["agent.py"], filename="agent.py")
    except SyntaxError as exc:
        return [*problems, f"agent.py does not parse ({exc})"]
    solve = [
        node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "solve"
    ]
    if not solve:
        problems.append("agent.py defines no top-level solve(client, item, config)")
    elif len(solve[0].args.args) != 3:
        problems.append("solve must take exactly (client, item, config)")
    return problems


_CHECKS: tuple[tuple[str, Check], ...] = (
    ("identity", _identity),
    ("splits-shape", _shape),
    ("deterministic", _deterministic),
    ("disjoint-splits", _disjoint),
    ("no-label-leakage", _no_leakage),
    ("reward-range", _reward_range),
    ("harness-template", _template),
)
