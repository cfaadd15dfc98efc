"""Reading and validating a SIA-format task directory.

The layout (that of the reference implementation's tasks)::

    <task>/data/public/task.md            what the agent is told
    <task>/data/public/<items file>       the items, without labels (JSON list, JSON map, CSV)
    <task>/data/public/evaluate.py        --gen-dir DIR → DIR/results.json
    <task>/data/private/                  labels, never shown to an agent
    <task>/reference/reference_target_agent.py   --dataset_dir D --working_dir W
    <task>/sia-task.json                  optional: {"records", "id_key", "metric",
                                          "metric_scale", "timeout_s", "episode_timeout_s",
                                          "name"}

``metric_scale`` maps the evaluator's metric into [0, 1] (0.01 for a percentage);
``timeout_s`` bounds one evaluator run (default 120), ``episode_timeout_s`` one run of the
target agent on one item (default 600).

Every problem found is a :class:`TaskDirError` with one line naming the directory and the
fix, raised before anything runs.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import TaskDirError
from tasks.siadir.records import RecordFile, read_records

__all__ = ["OVERRIDES_FILE", "TaskDir", "TaskDirError", "read_task_dir"]

OVERRIDES_FILE = "sia-task.json"
_OVERRIDE_KEYS = frozenset(
    {"records", "id_key", "metric", "metric_scale", "timeout_s", "episode_timeout_s", "name"}
)
#: Public files other than the items travel with every episode; past this they are a mistake.
MAX_SHARED_BYTES = 4 << 20


@dataclass(frozen=True)
class TaskDir:
    """A validated task directory. Paths are absolute; ``fingerprint`` hashes every file."""

    root: Path
    name: str
    description: str
    items: RecordFile
    private: tuple[RecordFile, ...]
    shared: dict[str, bytes]  # public files (relative path → bytes) beside the items file
    evaluator: Path
    reference: Path
    metric: str | None
    metric_scale: float
    timeout_s: float
    episode_timeout_s: float
    fingerprint: str

    @property
    def public(self) -> Path:
        return self.root / "data" / "public"


def read_task_dir(path: str | Path) -> TaskDir:
    """Validate ``path`` as a SIA-format task directory and read what a run needs."""
    root = Path(path).expanduser().resolve()
    where = f"SIA task dir {root}"
    if not root.is_dir():
        raise TaskDirError(f"{where}: not a directory")
    public, private = root / "data" / "public", root / "data" / "private"
    task_md, evaluator = public / "task.md", public / "evaluate.py"
    reference = root / "reference" / "reference_target_agent.py"
    if not task_md.is_file():
        raise TaskDirError(f"{where}: data/public/task.md is missing (the task description)")
    if not evaluator.is_file():
        raise TaskDirError(f"{where}: data/public/evaluate.py is missing (the scorer)")
    _parses(where, evaluator)
    if not private.is_dir():
        raise TaskDirError(f"{where}: data/private/ is missing (the labels the scorer reads)")
    _private_kept_apart(where, public, private)
    if not reference.is_file():
        raise TaskDirError(
            f"{where}: reference/reference_target_agent.py is missing (the harness to start from)"
        )
    _parses(where, reference)
    overrides = _overrides(where, root / OVERRIDES_FILE)
    items = _items_file(where, public, overrides)
    labels = _private_files(where, private, items)
    shared = _shared_files(where, public, items.path)
    return TaskDir(
        root=root,
        name=str(overrides.get("name") or root.name),
        description=task_md.read_text(encoding="utf-8"),
        items=items,
        private=labels,
        shared=shared,
        evaluator=evaluator,
        reference=reference,
        metric=overrides.get("metric"),
        metric_scale=float(overrides.get("metric_scale", 1.0)),
        timeout_s=float(overrides.get("timeout_s", 120)),
        episode_timeout_s=float(overrides.get("episode_timeout_s", 600)),
        fingerprint=_fingerprint(root),
    )


def _parses(where: str, path: Path) -> None:
    try:
        ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise TaskDirError(
            f"{where}: {path.name} does not parse (line {error.lineno}: {error.msg})"
        ) from None


def _private_kept_apart(where: str, public: Path, private: Path) -> None:
    for entry in sorted(public.rglob("*")):
        relative = entry.relative_to(public)
        if "private" in (part.lower() for part in relative.parts):
            raise TaskDirError(
                f"{where}: data/public/{relative} looks like private data inside the public "
                "folder, which agents read; move it to data/private/"
            )
        if entry.is_symlink() and entry.resolve().is_relative_to(private.resolve()):
            raise TaskDirError(
                f"{where}: data/public/{relative} links into data/private/, which agents "
                "must never read"
            )


def _overrides(where: str, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise TaskDirError(f"{where}: {OVERRIDES_FILE} is not JSON ({error})") from None
    if not isinstance(data, dict) or set(data) - _OVERRIDE_KEYS:
        unknown = sorted(set(data) - _OVERRIDE_KEYS) if isinstance(data, dict) else data
        raise TaskDirError(
            f"{where}: {OVERRIDES_FILE} has unknown keys {unknown}; "
            f"known: {', '.join(sorted(_OVERRIDE_KEYS))}"
        )
    return data


def _items_file(where: str, public: Path, overrides: dict[str, Any]) -> RecordFile:
    id_key = overrides.get("id_key")
    if "records" in overrides:
        path = (public.parent.parent / overrides["records"]).resolve()
        if not path.is_relative_to(public) or not path.is_file():
            raise TaskDirError(f"{where}: records {overrides['records']!r} is not in data/public")
        found = read_records(path, id_key)
        if found is None:
            raise TaskDirError(f"{where}: {overrides['records']} holds no records with ids")
        return found
    candidates = [
        found
        for path in sorted(public.rglob("*"))
        if path.is_file() and not path.name.lower().startswith("sample_submission")
        if (found := read_records(path, id_key)) is not None and found.kind != "json-map"
    ]
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(str(c.path.relative_to(public)) for c in candidates) or "none"
    raise TaskDirError(
        f"{where}: cannot tell which public file lists the items (candidates: {names}); "
        f'name it in {OVERRIDES_FILE}: {{"records": "data/public/FILE"}}'
    )


def _private_files(where: str, private: Path, items: RecordFile) -> tuple[RecordFile, ...]:
    ids = set(items.records)
    found = []
    for path in sorted(private.rglob("*")):
        if not path.is_file():
            continue
        records = read_records(path, items.id_key if path.suffix == items.path.suffix else None)
        if records is None and items.id_key is not None:
            records = read_records(path)
        if records is not None and ids <= set(records.records):
            found.append(records)
    if not found:
        raise TaskDirError(
            f"{where}: no file in data/private/ is keyed by the items' ids "
            f"(from {items.path.name}); the scorer would have no labels to subset"
        )
    return tuple(found)


def _shared_files(where: str, public: Path, items: Path) -> dict[str, bytes]:
    shared = {
        str(path.relative_to(public)): path.read_bytes()
        for path in sorted(public.rglob("*"))
        if path.is_file() and path != items and path.name != "evaluate.py"
    }
    size = sum(len(data) for data in shared.values())
    if size > MAX_SHARED_BYTES:
        raise TaskDirError(
            f"{where}: public files beside the items total {size >> 20} MB; every episode "
            f"gets a copy, so keep them under {MAX_SHARED_BYTES >> 20} MB"
        )
    return shared


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
