"""The task contract: items, seeded splits, what a harness may see, and the reward.

A task is a versioned problem set. Implementations subclass :class:`Task` and provide
``splits``, ``reward`` and ``harness_template``; the base class derives everything else
(item lookup, public inputs, few-shot demonstrations) from those. ``tasks.check.check_task``
verifies an implementation against the contract below.

Contract
--------
id : str
    Versioned and stable, ``<name>-v<N>`` (e.g. ``"arith-v1"``). Any change to the items,
    the splits or the reward makes a new version, so scores in old ledgers keep their meaning.
description : str
    What the task is and how it is scored, in a few sentences; agents read it.
splits(seed) -> dict[str, list[Item]]
    ``"train"``, ``"val"`` and ``"test"``, each non-empty. The same seed gives equal lists in
    every process; ids and prompts are unique within and across splits.
public_item(item_id) -> dict
    The JSON-serialisable input of one item, exactly what a harness may see: never the
    answer, nor any field that reveals it.
reward(item, answer_text) -> float
    In ``[0, 1]``; the item's own ``answer`` scores ``1.0``. ``answer_text`` is the final
    answer string a harness returned: the harness extracts, the reward only compares.
    Tasks whose reward is measured rather than matched (a speedup, an error ratio) set
    ``answer_is_best = False``: their own answer is a reference that must score above every
    wrong answer, not necessarily ``1.0``.
metric : str
    What the mean reward means, in a few words (``"accuracy"``, ``"speedup, gated"``).
harness_template() -> dict[str, bytes]
    The initial harness: at least ``agent.py`` (defining ``solve(client, item, config)``)
    and ``harness.json`` (its configuration).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, ClassVar

from tasks.errors import TaskError

__all__ = ["SPLITS", "Item", "Splits", "Task", "check_split_sizes", "template_files"]

#: The split names every task provides, in the order they are used by a run.
SPLITS: tuple[str, ...] = ("train", "val", "test")

Splits = dict[str, list["Item"]]


@dataclass(frozen=True)
class Item:
    """One problem. ``meta`` holds structured fields; only those a task lists are public."""

    id: str
    prompt: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)


class Task(abc.ABC):
    """A versioned task bound to one seed; see the module docstring for the contract."""

    id: ClassVar[str]
    description: ClassVar[str]
    metric: ClassVar[str] = "accuracy"
    #: ``meta`` keys copied into :meth:`public_item` next to ``id`` and ``question``.
    public_meta_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether an item's own ``answer`` attains the top reward ``1.0`` (see the contract).
    answer_is_best: ClassVar[bool] = True
    #: Wall-clock seconds one episode may take; tasks whose answers are long (code) or
    #: whose harness runs a whole agent raise it.
    episode_timeout_s: ClassVar[float] = 60.0

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._splits: Splits | None = None
        self._index: dict[str, Item] | None = None

    @abc.abstractmethod
    def splits(self, seed: int) -> Splits:
        """Train/val/test items drawn deterministically from ``seed``."""

    @abc.abstractmethod
    def reward(self, item: Item, answer_text: str) -> float:
        """Score a harness's final answer for ``item``, in ``[0, 1]``."""

    @abc.abstractmethod
    def harness_template(self) -> dict[str, bytes]:
        """The initial harness files, path → content."""

    def items(self, split: str) -> list[Item]:
        """The items of ``split`` under this task's seed."""
        splits = self._bound_splits()
        if split not in splits:
            raise TaskError(f"task {self.id} has no split {split!r}; splits: {', '.join(splits)}")
        return list(splits[split])

    def item_ids(self, split: str) -> list[str]:
        return [item.id for item in self.items(split)]

    def item(self, item_id: str) -> Item:
        """Any item of this task by id, whatever its split."""
        if self._index is None:
            self._index = {it.id: it for items in self._bound_splits().values() for it in items}
        try:
            return self._index[item_id]
        except KeyError:
            raise TaskError(f"task {self.id} has no item {item_id!r}") from None

    def split_of(self, item_id: str) -> str:
        for name, items in self._bound_splits().items():
            if any(it.id == item_id for it in items):
                return name
        raise TaskError(f"task {self.id} has no item {item_id!r}")

    def public_item(self, item_id: str) -> dict[str, Any]:
        """What a harness sees of an item: id, question and the task's public meta fields."""
        item = self.item(item_id)
        public: dict[str, Any] = {"id": item.id, "question": item.prompt}
        for key in self.public_meta_keys:
            public[key] = item.meta[key]
        return public

    def reward_detail(self, item: Item, answer_text: str) -> dict[str, Any]:
        """Structured detail behind :meth:`reward` (JSON-serialisable); empty by default.

        Measured rewards say what they measured (``{"correct": true, "speedup": 1.8}``), so
        a trajectory shows why an answer scored what it did.
        """
        return {}

    def score(self, item: Item, answer_text: str) -> tuple[float, dict[str, Any]]:
        """:meth:`reward` and :meth:`reward_detail` together; what the runner records.

        Tasks that measure (run code, time it) override this to measure once.
        """
        return self.reward(item, answer_text), self.reward_detail(item, answer_text)

    def valid_answer(self, answer: str) -> bool | None:
        """Whether ``answer`` is one of the task's labels; ``None``: no closed answer set.

        Classification tasks override this, so the invalid-label rate of a rollout can
        tell "answered outside the label set" apart from "picked the wrong label".
        """
        return None

    def demonstrations(self, k: int) -> list[dict[str, Any]]:
        """``k`` worked examples for few-shot prompting, from the train split only.

        Each is ``{"item": <public item>, "answer": <answer>}`` so a harness renders it
        with the same template as the question it is asked.
        """
        return [
            {"item": self.public_item(item.id), "answer": item.answer}
            for item in self.items("train")[: max(0, k)]
        ]

    def _bound_splits(self) -> Mapping[str, list[Item]]:
        if self._splits is None:
            self._splits = self.splits(self.seed)
        return self._splits

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, seed={self.seed})"


def template_files(package: str) -> dict[str, bytes]:
    """The files of ``package``'s ``template`` folder (path → bytes, sorted by path)."""
    root = resources.files(package).joinpath("template")
    files = {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and not entry.name.endswith((".pyc", ".pyo"))
    }
    return dict(sorted(files.items()))


def check_split_sizes(task: str, sizes: Mapping[str, Any], available: int | None = None) -> None:
    """Raise :class:`TaskError` unless every size is a positive integer and, when
    ``available`` is given, they add up to no more than that many distinct items."""
    for name, size in sizes.items():
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise TaskError(f"{task}: {name} size must be a positive integer, got {size!r}")
    total = sum(sizes.values())
    if available is not None and total > available:
        raise TaskError(f"{task}: {total} items requested, only {available} distinct exist")
