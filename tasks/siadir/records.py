"""Record files of a SIA-format task: which public file lists the items, and subsets of them.

A SIA-format task keeps its items in one public file and their labels in private files,
keyed by the same id. Three shapes occur in the wild and are understood here:

- a JSON list of objects carrying an id key (``id``, ``question_id``);
- a JSON object mapping ids to values (``answers.json``: ``{"q1": [...]}``);
- a CSV file with an id column.

Filtering keeps a file's shape, so a task's own evaluator reads a subset exactly as it
reads the whole.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import TaskDirError

__all__ = ["ID_KEYS", "RecordFile", "read_records"]

#: Keys that name an item's id, in the order they are tried.
ID_KEYS: tuple[str, ...] = ("id", "question_id", "item_id", "uid")


@dataclass(frozen=True)
class RecordFile:
    """A file whose entries are keyed by item id; ``records`` maps id → entry, in file order.

    ``kind`` is ``json-list``, ``json-map`` or ``csv``; ``id_key`` is the key (or column)
    holding the id (``None`` for a map, whose keys are the ids).
    """

    path: Path
    kind: str
    id_key: str | None
    records: dict[str, Any]
    header: tuple[str, ...] = ()

    def subset(self, ids: set[str]) -> bytes:
        """The file's content with only the entries of ``ids``, in its original format."""
        kept = {key: value for key, value in self.records.items() if key in ids}
        if self.kind == "json-list":
            return _json(list(kept.values()))
        if self.kind == "json-map":
            return _json(kept)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(self.header), lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept.values())
        return out.getvalue().encode("utf-8")


def read_records(path: Path, id_key: str | None = None) -> RecordFile | None:
    """``path`` as a record file, or ``None`` when it is not one of the known shapes.

    ``id_key`` forces the key; otherwise the first of :data:`ID_KEYS` that every entry has.
    A file that looks like records but repeats an id raises :class:`TaskDirError`.
    """
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return _from_json(path, data, id_key)
        if suffix == ".csv":
            return _from_csv(path, path.read_text(encoding="utf-8-sig"), id_key)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as error:
        raise TaskDirError(f"cannot read {path}: {error}") from error
    return None


def _from_json(path: Path, data: Any, id_key: str | None) -> RecordFile | None:
    if isinstance(data, list) and data and all(isinstance(entry, dict) for entry in data):
        key = id_key or _common_key(data)
        if key is None or not all(key in entry for entry in data):
            return None
        return RecordFile(path, "json-list", key, _unique(path, [(e[key], e) for e in data]))
    # Any object could map ids to entries; callers decide by whether its keys are the ids.
    if isinstance(data, dict) and data and id_key is None:
        return RecordFile(path, "json-map", None, _unique(path, list(data.items())))
    return None


def _from_csv(path: Path, text: str, id_key: str | None) -> RecordFile | None:
    reader = csv.DictReader(io.StringIO(text))
    header = tuple(reader.fieldnames or ())
    key = id_key or next((k for k in ID_KEYS if k in header), None)
    if key is None or key not in header:
        return None
    rows = list(reader)
    return RecordFile(path, "csv", key, _unique(path, [(row[key], row) for row in rows]), header)


def _common_key(entries: list[dict[str, Any]]) -> str | None:
    return next((k for k in ID_KEYS if all(k in entry for entry in entries)), None)


def _unique(path: Path, pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    records: dict[str, Any] = {}
    for raw, entry in pairs:
        key = str(raw)
        if key in records:
            raise TaskDirError(f"{path} repeats the id {key!r}")
        records[key] = entry
    return records


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
