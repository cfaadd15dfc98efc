"""``DirTask``: a SIA-format task directory as a :class:`~tasks.base.Task`.

Each item of the task's items file is one episode. Splits are drawn from the items with the
run's seed. An episode's harness gets the public data restricted to its item and answers
with the files its target agent wrote; the task's own evaluator scores those files against
the labels of that item alone, and the metric it writes is the episode's reward.
"""

from __future__ import annotations

import json
import random
import re
import threading
from importlib import resources
from typing import Any

from tasks.base import Item, Splits, Task
from tasks.siadir.layout import TaskDir, TaskDirError, read_task_dir
from tasks.siadir.scoring import Evaluation, evaluate_submission

__all__ = ["MAX_EVAL_ITEMS", "DirTask"]

#: val and test take a fifth of the items each, up to this many.
MAX_EVAL_ITEMS = 50
#: An evaluator that rejects this many submissions in a row, none ever accepted, is broken.
_CRASHES_BEFORE_GIVING_UP = 8
_KEY_ENV = re.compile(r"""["']([A-Z][A-Z0-9_]*(?:API_KEY|TOKEN))["']""")
_TEXT_SUFFIXES = (".md", ".json", ".csv", ".txt", ".jsonl", ".tsv", ".yaml", ".yml")


class DirTask(Task):
    """A task read from a SIA-format directory (see :mod:`tasks.siadir.layout`)."""

    answer_is_best = False  # an item's answer is its labels, not a submission
    #: The id is ``name@fingerprint`` and the reward scores a submission, so the contract's
    #: id and reward-range checks do not apply; the layout was checked on loading.
    contract_checks = (
        "splits-shape",
        "deterministic",
        "disjoint-splits",
        "no-label-leakage",
        "harness-template",
    )

    def __init__(self, source: str | TaskDir, seed: int = 0) -> None:
        super().__init__(seed)
        self.dir = source if isinstance(source, TaskDir) else read_task_dir(source)
        self.id = f"{self.dir.name}@{self.dir.fingerprint[:12]}"
        self.description = (
            f"SIA-format task {self.dir.name}. Each episode is one item; the harness gets "
            "the public data restricted to that item and answers with the files its target "
            'agent wrote, as JSON {"files": {path: text}}, which the task\'s evaluate.py '
            "scores.\n\n" + self.dir.description
        )
        self.metric = self.dir.metric or "evaluate.py's metric"
        self.episode_timeout_s = self.dir.episode_timeout_s
        self._rejected_in_a_row = 0
        self._accepted = 0
        self._counting = threading.Lock()  # episodes are scored on several threads

    def splits(self, seed: int) -> Splits:
        ids = list(self.dir.items.records)
        if len(ids) < 3:
            raise TaskDirError(f"SIA task dir {self.dir.root}: needs at least 3 items")
        random.Random(seed).shuffle(ids)
        held = min(MAX_EVAL_ITEMS, max(1, len(ids) // 5))
        chosen = {"val": ids[:held], "test": ids[held : 2 * held], "train": ids[2 * held :]}
        return {split: [self._item(i) for i in chosen[split]] for split in ("train", "val", "test")}

    def _item(self, item_id: str) -> Item:
        record = self.dir.items.records[item_id]
        labels = {
            str(f.path.relative_to(self.dir.root)): f.records[item_id] for f in self.dir.private
        }
        return Item(
            id=item_id,
            prompt=json.dumps(record, ensure_ascii=False, sort_keys=True),
            answer=json.dumps(labels, ensure_ascii=False, sort_keys=True),
            meta={"record": record},
        )

    def public_item(self, item_id: str) -> dict[str, Any]:
        item = self.item(item_id)
        files = {
            name: data.decode("utf-8")
            for name, data in self.dir.shared.items()
            if name.endswith(_TEXT_SUFFIXES)
        }
        items_name = str(self.dir.items.path.relative_to(self.dir.public))
        files[items_name] = self.dir.items.subset({item_id}).decode("utf-8")
        return {"id": item.id, "question": item.prompt, "files": files}

    def reward(self, item: Item, answer_text: str) -> float:
        return self.score(item, answer_text)[0]

    def reward_detail(self, item: Item, answer_text: str) -> dict[str, Any]:
        return self.score(item, answer_text)[1]

    def score(self, item: Item, answer_text: str) -> tuple[float, dict[str, Any]]:
        """One evaluator run: its metric (0 when it rejected the submission) and results."""
        found = self._run_evaluator(item, answer_text)
        detail = {"metric": found.metric, "reason": found.reason, "results": found.results}
        return (0.0 if found.metric is None else found.metric), detail

    def harness_template(self) -> dict[str, bytes]:
        root = resources.files("tasks.siadir").joinpath("template")
        reference = self.dir.reference.read_bytes()
        config = {
            "entry": "target_agent.py",
            "key_env": sorted(set(_KEY_ENV.findall(reference.decode("utf-8", "replace")))),
            "model": None,
        }
        return {
            "agent.py": root.joinpath("agent.py").read_bytes(),
            "harness.json": (json.dumps(config, indent=2) + "\n").encode(),
            "target_agent.py": reference,
        }

    def _run_evaluator(self, item: Item, answer_text: str) -> Evaluation:
        files = _submitted_files(answer_text)
        if files is None:
            return Evaluation(None, 'answer is not JSON {"files": {path: text}}')
        found = evaluate_submission(self.dir, {item.id}, files)
        if not files and found.metric is None:
            return found  # nothing submitted: the harness failed, whatever the evaluator says
        with self._counting:
            if found.metric is not None:
                self._accepted += 1
                self._rejected_in_a_row = 0
                return found
            self._rejected_in_a_row += 1
            rejected = self._rejected_in_a_row
            broken = not self._accepted and rejected >= _CRASHES_BEFORE_GIVING_UP
        if broken:
            raise TaskDirError(
                f"SIA task dir {self.dir.root}: evaluate.py rejected the first {rejected} "
                f"submissions and accepted none; last: {found.reason}"
            )
        return found


def _submitted_files(answer_text: str) -> dict[str, str] | None:
    try:
        answer = json.loads(answer_text)
    except (TypeError, ValueError):
        return None
    files = answer.get("files") if isinstance(answer, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        return None
    return files
