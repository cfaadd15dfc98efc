"""``arith-v1``: two-digit addition, scored by exact integer match."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tasks.base import Item, Splits, Task, check_split_sizes, template_files

__all__ = ["ArithConfig", "ArithTask", "parse_integer"]

_LOW, _HIGH = 10, 99
# Unordered pairs, so that "47 + 38" and "38 + 47" never land in different splits.
_PAIRS = [(a, b) for a in range(_LOW, _HIGH + 1) for b in range(a, _HIGH + 1)]
_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_integer(text: str) -> int | None:
    """The integer ``text`` spells after stripping whitespace, or ``None``.

    Stricter than ``int()``: no underscores, no non-ASCII digits, no decimals.
    """
    text = text.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


@dataclass(frozen=True)
class ArithConfig:
    """Split sizes; their sum may not exceed the number of distinct unordered pairs."""

    train: int = 200
    val: int = 50
    test: int = 50

    def __post_init__(self) -> None:
        sizes = {"train": self.train, "val": self.val, "test": self.test}
        check_split_sizes("arith", sizes, len(_PAIRS))


class ArithTask(Task):
    id = "arith-v1"
    description = (
        "Two-digit addition: each item asks 'What is A + B?' with 10 <= A, B <= 99. "
        "The harness returns the final answer as a string; the reward is 1.0 if it is "
        "exactly the integer A + B and 0.0 otherwise (non-integers score 0)."
    )
    public_meta_keys = ("a", "b")

    def __init__(self, seed: int = 0, config: ArithConfig | None = None) -> None:
        super().__init__(seed)
        self.config = config or ArithConfig()

    def splits(self, seed: int) -> Splits:
        rng = random.Random(seed)
        sizes = (self.config.train, self.config.val, self.config.test)
        chosen = rng.sample(_PAIRS, sum(sizes))
        items = [_item(*(pair if rng.random() < 0.5 else pair[::-1])) for pair in chosen]
        train, val = sizes[0], sizes[0] + sizes[1]
        return {"train": items[:train], "val": items[train:val], "test": items[val:]}

    def reward(self, item: Item, answer_text: str) -> float:
        value = parse_integer(answer_text) if isinstance(answer_text, str) else None
        return 1.0 if value is not None and value == int(item.answer) else 0.0

    def harness_template(self) -> dict[str, bytes]:
        return template_files("tasks.arith")


def _item(a: int, b: int) -> Item:
    return Item(
        id=f"add-{a}-{b}", prompt=f"What is {a} + {b}?", answer=str(a + b), meta={"a": a, "b": b}
    )
