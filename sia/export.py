"""Export a run's recorded trajectories as a training data set (JSONL or Parquet).

A run's ledger already holds what fine-tuning and RL need: every model call the gateway
served (the request, the reply, its token ids and per-token logprobs) and every episode's
reward. This module turns them into flat rows that data loaders read directly, so a run's
trajectories can train or be studied outside SIA without a DuckDB reader.

**One row is one model call.** An episode may make several calls (retries, multi-turn
harnesses), and each call is one (prompt, completion) pair with its own tokens and
logprobs: the unit SFT and policy-gradient trainers consume. Every call row carries its
episode's reward and outcome, so an episode-level view is a group-by ``episode_id`` away,
ordered by ``call_index``. Episodes that made no call (an error before the first request)
yield no row; calls whose episode has no recorded outcome (a rollout interrupted before it
finished) are not exported either, since they have no reward.

Rows use the OpenAI chat format: ``messages`` is the request's messages followed by the
assistant's reply as the final message. A call made on the text-completions endpoint
(``/v1/completions``) has no messages: its row has ``messages`` null, the prompt text in
``prompt`` and ``endpoint == "completions"``; nothing is made up to turn it into a chat.

Every value comes from the ledger: the ``calls`` and ``episodes`` tables, and the run's
first event for the ``model`` (the policy the run's configuration names). The row fields,
in order, are :data:`ROW_SCHEMA`'s.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ledger import Recorder
from ledger.records import EPISODE_PURPOSES, CallRow, EpisodeRow
from sia.files import atomic_output
from sia.history import iteration_records, run_state
from sia.trajectories import read_trajectories
from statemachine.errors import SiaError
from tasks.base import SPLITS

__all__ = [
    "FORMATS",
    "ROW_SCHEMA",
    "ExportError",
    "ExportFilters",
    "ExportResult",
    "ExportRows",
    "check_output",
    "export_rows",
    "export_run",
    "format_for",
    "write_jsonl",
    "write_parquet",
]

FORMATS = ("jsonl", "parquet")

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

#: The exported columns. Fixed rather than inferred, so an export with no rows still has
#: every column and a column that is null in every row keeps its type. Token ids and
#: logprobs have the ledger's own types (int32, float32), so Parquet holds them exactly.
ROW_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("iteration", pa.int32(), nullable=False),
        # Why the episode ran: rollout (training), eval (a split's evaluation), smoke (the
        # one-episode check of a proposed harness, whose commit is "uncommitted").
        pa.field("purpose", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("call_index", pa.int32(), nullable=False),
        # "chat" (messages) or "completions" (prompt): which OpenAI endpoint was called.
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("messages", pa.list_(_MESSAGE)),
        pa.field("prompt", pa.string()),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("completion_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("reward", pa.float64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("answer", pa.string()),
        # JSON text: what the task measured behind the reward; its shape is the task's.
        pa.field("reward_detail", pa.string()),
        pa.field("adapter_tag", pa.string()),
        pa.field("harness_commit", pa.string(), nullable=False),
        pa.field("model", pa.string()),
    ]
)

_PARQUET_BATCH = 1024


class ExportError(SiaError):
    """An export that cannot be made: a bad filter, format or output path."""


@dataclass(frozen=True)
class ExportFilters:
    """Which episodes to export; ``None`` means no restriction.

    ``split`` is the episode's item split as the ledger records it (rollouts and smoke
    checks run on ``train``, evaluations on ``val`` or ``test``); ``purpose`` tells rollouts
    from evaluations and smoke checks. ``min_reward`` keeps episodes whose reward is at least
    that value, so episodes without a reward are dropped once it is given.
    """

    split: str | None = None
    purpose: str | None = None
    iteration: int | None = None
    min_reward: float | None = None

    def check(self) -> None:
        """Raise :class:`ExportError` for a value no ledger can match, before any read."""
        if self.split is not None and self.split not in SPLITS:
            raise ExportError(f"unknown split {self.split!r} (splits: {', '.join(SPLITS)})")
        if self.purpose is not None and self.purpose not in EPISODE_PURPOSES:
            raise ExportError(
                f"unknown purpose {self.purpose!r} (purposes: {', '.join(EPISODE_PURPOSES)})"
            )
        if self.iteration is not None and (
            isinstance(self.iteration, bool)
            or not isinstance(self.iteration, int)
            or self.iteration < 0
        ):
            raise ExportError(f"iteration must be an integer >= 0, not {self.iteration!r}")
        if self.min_reward is not None and (
            isinstance(self.min_reward, bool)
            or not isinstance(self.min_reward, int | float)
            or not math.isfinite(self.min_reward)
        ):
            raise ExportError(f"min reward must be a finite number, not {self.min_reward!r}")

    def keeps(self, episode: EpisodeRow) -> bool:
        """Whether ``episode`` passes the filters the ledger query did not apply."""
        if self.split is not None and episode.split != self.split:
            return False
        if self.min_reward is None:
            return True
        return episode.reward is not None and episode.reward >= self.min_reward


@dataclass
class ExportRows:
    """The rows of one export, produced lazily; counts fill in as they are consumed."""

    run_id: str
    filters: ExportFilters
    _source: Iterator[dict[str, Any]]
    rows: int = 0
    episodes: int = 0
    _seen: set[tuple[int, str]] = field(default_factory=set, repr=False)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self._source:
            self.rows += 1
            key = (row["iteration"], row["episode_id"])
            if key not in self._seen:
                self._seen.add(key)
                self.episodes += 1
            yield row


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: where, in which format, and how much (``episodes`` counts the
    distinct episodes among the rows)."""

    run_id: str
    path: Path
    format: str
    rows: int
    episodes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "path": str(self.path),
            "format": self.format,
            "rows": self.rows,
            "episodes": self.episodes,
        }


def export_rows(
    recorder: Recorder, run_id: str, filters: ExportFilters | None = None
) -> ExportRows:
    """The rows of ``run_id``'s recorded calls that pass ``filters``, one per model call.

    Checks the run and the filters at once (:class:`~ledger.RunNotFound`,
    :class:`ExportError`), so a caller learns of a mistake before it opens an output file;
    the rows are then read one iteration at a time, which bounds memory by the largest
    iteration rather than by the run. Order: iteration, purpose, episode id, call index.
    """
    filters = filters or ExportFilters()
    filters.check()
    state = run_state(recorder, run_id)
    iterations = sorted(iteration_records(state))
    if filters.iteration is not None and filters.iteration not in iterations:
        known = ", ".join(map(str, iterations)) or "none yet"
        raise ExportError(f"run {run_id} has no iteration {filters.iteration} (has: {known})")
    model = state.config.get("policy")
    model = model if isinstance(model, str) else None
    # Episode rows are small; reading them first names the iterations whose calls to read.
    recorded = recorder.read_episodes(run_id, filters.iteration, filters.purpose)
    chosen = sorted({episode.iteration for episode in recorded})
    return ExportRows(run_id, filters, _rows(recorder, run_id, chosen, filters, model))


def _rows(
    recorder: Recorder,
    run_id: str,
    iterations: list[int],
    filters: ExportFilters,
    model: str | None,
) -> Iterator[dict[str, Any]]:
    for iteration in iterations:
        found = read_trajectories(recorder, run_id, iteration=iteration, purpose=filters.purpose)
        for trajectory in found:
            if filters.keeps(trajectory.episode):
                for call in trajectory.calls:
                    yield _row(trajectory.episode, call, model)


def _row(episode: EpisodeRow, call: CallRow, model: str | None) -> dict[str, Any]:
    sent = json.loads(call.messages_json)
    chat = isinstance(sent, list)
    return {
        "run_id": episode.run_id,
        "iteration": episode.iteration,
        "purpose": episode.purpose,
        "split": episode.split,
        "episode_id": episode.episode_id,
        "item_id": episode.item_id,
        "call_index": call.call_index,
        "endpoint": "chat" if chat else "completions",
        # The gateway stores messages as it normalised them: role and text content only.
        "messages": (
            [{"role": m["role"], "content": m["content"]} for m in sent]
            + [{"role": "assistant", "content": call.completion_text}]
            if chat
            else None
        ),
        "prompt": None if chat else sent,
        # Ledgers of schema < 2 did not keep the reply text; it reads back as "".
        "completion": call.completion_text,
        "prompt_ids": list(call.prompt_ids),
        "completion_ids": list(call.completion_ids),
        "logprobs": list(call.logprobs),
        "finish_reason": call.finish_reason,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "reward": episode.reward,
        "status": episode.status,
        "answer": episode.answer,
        "reward_detail": episode.reward_detail,
        # The weights that produced this call's tokens, which is what a trainer needs.
        "adapter_tag": call.adapter_tag,
        "harness_commit": call.harness_commit,
        "model": model,
    }


# ---- writers ------------------------------------------------------------------------------


def format_for(path: Path, fmt: str | None = None) -> str:
    """``fmt`` checked, or the format ``path``'s suffix names (``.jsonl``, ``.parquet``)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ExportError(f"unknown format {fmt!r} (formats: {', '.join(FORMATS)})")
        return fmt
    by_suffix = {".jsonl": "jsonl", ".parquet": "parquet"}
    if Path(path).suffix.lower() in by_suffix:
        return by_suffix[Path(path).suffix.lower()]
    raise ExportError(
        f"cannot tell the format of {path} from its suffix; give --format jsonl|parquet"
    )


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write ``rows`` as JSON Lines to ``path`` atomically; returns the number written.

    JSON has no infinities or NaN, so such a float (a ``-inf`` logprob of a token outside
    the sampling nucleus) is written as ``null``; Parquet keeps it as it is.
    """
    count = 0
    with _atomic_output(Path(path)) as out:
        for row in rows:
            out.write(json.dumps(_finite_or_null(row), ensure_ascii=False, allow_nan=False))
            out.write("\n")
            count += 1
    return count


def write_parquet(
    rows: Iterable[dict[str, Any]],
    path: str | os.PathLike[str],
    *,
    batch_rows: int = _PARQUET_BATCH,
) -> int:
    """Write ``rows`` as Parquet (schema :data:`ROW_SCHEMA`) to ``path`` atomically.

    Rows are written in row groups of ``batch_rows``, so memory stays bounded however
    many rows there are; an export without rows is a valid file with the full schema.
    """
    count = 0
    with (
        _atomic_output(Path(path), binary=True) as out,
        pq.ParquetWriter(out, ROW_SCHEMA) as writer,
    ):
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
                count += len(batch)
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=ROW_SCHEMA))
            count += len(batch)
    return count


_WRITERS: dict[str, Callable[[Iterable[dict[str, Any]], Path], int]] = {
    "jsonl": write_jsonl,
    "parquet": write_parquet,
}


def export_run(
    recorder: Recorder,
    run_id: str,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    filters: ExportFilters | None = None,
) -> ExportResult:
    """Write ``run_id``'s call rows passing ``filters`` to ``path`` in format ``fmt``.

    ``fmt`` defaults to what the suffix of ``path`` names. An existing file at ``path`` is
    replaced, but only once the new one is complete: every check runs before the output is
    opened, and a failure while writing removes the partial file, so ``path`` holds either
    its old content or the whole export.
    """
    path = Path(path)
    fmt = format_for(path, fmt)
    check_output(path)
    rows = export_rows(recorder, run_id, filters)
    written = _WRITERS[fmt](rows, path)
    return ExportResult(run_id, path, fmt, written, rows.episodes)


def check_output(path: Path) -> None:
    """Refuse an output path that cannot become a file, before anything is read."""
    if path.is_dir():
        raise ExportError(f"cannot write {path}: it is a directory")
    parent = path.parent
    if not parent.is_dir():
        raise ExportError(f"cannot write {path}: no directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {path}: directory {parent} is not writable")


@contextmanager
def _atomic_output(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """:func:`sia.files.atomic_output`, with a failure to write as one :class:`ExportError`."""
    try:
        with atomic_output(path, binary=binary) as out:
            yield out
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def _finite_or_null(row: dict[str, Any]) -> dict[str, Any]:
    def bad(x: Any) -> bool:
        return isinstance(x, float) and not math.isfinite(x)

    if not any(bad(x) for x in row["logprobs"]) and not any(
        bad(row[name]) for name in ("reward", "temperature", "top_p")
    ):
        return row
    fixed = dict(row)
    fixed["logprobs"] = [None if bad(x) else x for x in row["logprobs"]]
    for name in ("reward", "temperature", "top_p"):
        if bad(row[name]):
            fixed[name] = None
    return fixed
