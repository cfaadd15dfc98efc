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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import TaskDirError
from tasks.siadir.records import ID_KEYS, RecordFile, read_records

__all__ = ["OVERRIDES_FILE", "TaskDir", "TaskDirError", "read_task_dir"]

OVERRIDES_FILE = "sia-task.json"
_OVERRIDE_KEYS = frozenset(
    {"records", "id_key", "metric", "metric_scale", "timeout_s", "episode_timeout_s", "name"}
)
#: Public files other than the items travel with every episode; past this they are a mistake.
MAX_SHARED_BYTES = 4 << 20
#: Any one file of a task is read whole (items, labels) or hashed; past this it is refused
#: before it is read, rather than filling memory.
MAX_FILE_BYTES = 256 << 20
#: A run draws train, val and test items from the items file: one each at the least.
MIN_ITEMS = 3
#: The overrides' value types and ranges: (accepted types, check, what the check requires).
_STRING = ((str,), bool, "a non-empty string")
_POSITIVE = ((int, float), lambda v: math.isfinite(v) and v > 0, "a number > 0")
_OVERRIDE_TYPES = {
    "records": _STRING,
    "id_key": _STRING,
    "metric": _STRING,
    "name": _STRING,
    "metric_scale": _POSITIVE,
    "timeout_s": _POSITIVE,
    "episode_timeout_s": _POSITIVE,
}


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
    _files_fit(where, root)
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
    if len(items.records) < MIN_ITEMS:
        raise TaskDirError(
            f"{where}: {_rel(root, items.path)} lists {len(items.records)} item(s); a run "
            f"needs at least {MIN_ITEMS} (train, val and test take one each)"
        )
    labels = _private_files(where, private, items)
    shared = _shared_files(where, public, items.path)
    return TaskDir(
        root=root,
        name=str(overrides.get("name") or root.name),
        description=_text(where, root, task_md),
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
    for key, value in data.items():
        types, fits, wanted = _OVERRIDE_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types) or not fits(value):
            raise TaskDirError(f"{where}: {OVERRIDES_FILE}: {key} must be {wanted}, got {value!r}")
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
    if not candidates:
        near = _near_miss(public)
        if near is not None:
            raise TaskDirError(f"{where}: {near}")
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
            + _missing_labels(private, items)
        )
    return tuple(found)


def _missing_labels(private: Path, items: RecordFile) -> str:
    """Where a private file labels most items but not all: which ids it lacks."""
    ids = set(items.records)
    best: tuple[int, Path, list[str]] | None = None
    for path in sorted(private.rglob("*")):
        try:
            records = read_records(path) if path.is_file() else None
        except TaskDirError:
            continue
        if records is None and path.is_file() and items.id_key is not None:
            try:
                records = read_records(path, items.id_key)
            except TaskDirError:
                continue
        if records is None:
            continue
        missing = sorted(ids - set(records.records))
        shared = len(ids) - len(missing)
        if shared and (best is None or shared > best[0]):
            best = (shared, path, missing)
    if best is None:
        return ""
    _, path, missing = best
    shown = ", ".join(map(repr, missing[:3])) + (", …" if len(missing) > 3 else "")
    return f"; {path.name} has no label for {len(missing)} item(s): {shown}"


def _near_miss(public: Path) -> str | None:
    """Why the public JSON file that looks most like the items does not qualify: an empty
    list, or entries of which some lack the id every item needs."""
    for path in sorted(public.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue  # read_records names unreadable files itself
        name = str(path.relative_to(public))
        if data == []:
            return f"data/public/{name} is an empty list: a task needs at least {MIN_ITEMS} items"
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            continue
        for key in ID_KEYS:
            lacking = [index for index, entry in enumerate(data) if key not in entry]
            if len(lacking) < len(data):
                return (
                    f"data/public/{name}: entry {lacking[0]} (of {len(data)}) has no "
                    f"{key!r}, which every item needs as its id"
                )
    return None


def _files_fit(where: str, root: Path) -> None:
    """Every link stays inside the task dir and no file is too big, checked before any file
    is read: a link out would hand agents (and the fingerprint) files the task does not
    own, and a huge file would be read whole."""
    private = root / "data" / "private"
    for folder, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(folder) / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise TaskDirError(
                        f"{where}: {_rel(root, path)} links outside the task dir (to {target}); "
                        "copy what it needs into the dir instead"
                    )
                if private.is_relative_to(target):
                    # A link to data/ (or the root) reaches the labels by another name.
                    raise TaskDirError(
                        f"{where}: {_rel(root, path)} links to {_rel(root, target)}, "
                        "which holds data/private/; agents must never reach the labels"
                    )
            if name in files and path.is_file():
                size = path.stat().st_size
                if size > MAX_FILE_BYTES:
                    raise TaskDirError(
                        f"{where}: {_rel(root, path)} is {size >> 20} MB; task files over "
                        f"{MAX_FILE_BYTES >> 20} MB are refused (they are read whole)"
                    )


def _text(where: str, root: Path, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise TaskDirError(f"{where}: {_rel(root, path)} is not UTF-8 text ({error})") from None


def _rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


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
