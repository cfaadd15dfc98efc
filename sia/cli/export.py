"""`sia export`: a run's recorded model calls as a JSONL or Parquet training set."""

from __future__ import annotations

from pathlib import Path

import click

from ledger.records import EPISODE_PURPOSES
from sia.cli.integrity import refuse_altered
from sia.cli.main import cli, emit_json, open_workspace, pass_workspace
from sia.export import FORMATS, ExportError, ExportFilters, export_run
from tasks.base import SPLITS

__all__ = ["export"]


# Choices are checked by the library rather than by click, so a wrong value is one line
# of error like every other export error, not a usage block.
@cli.command()
@click.argument("run_id")
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(path_type=Path),
    help="File to write; replaced only once the export is complete.",
)
@click.option(
    "--format",
    "fmt",
    metavar=f"[{'|'.join(FORMATS)}]",
    default=None,
    help="Output format; default: from the --out suffix (.jsonl, .parquet).",
)
@click.option(
    "--split",
    metavar=f"[{'|'.join(SPLITS)}]",
    default=None,
    help="Only episodes on this item split (rollouts run on train).",
)
@click.option(
    "--purpose",
    metavar=f"[{'|'.join(EPISODE_PURPOSES)}]",
    default=None,
    help="Only rollouts, evaluations, or smoke checks of proposed harnesses.",
)
@click.option("--iteration", type=int, default=None, help="Only this iteration.")
@click.option(
    "--min-reward",
    type=float,
    default=None,
    help="Only episodes whose reward is at least this (drops episodes without one).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_workspace
def export(
    root: Path,
    run_id: str,
    out: Path,
    fmt: str | None,
    split: str | None,
    purpose: str | None,
    iteration: int | None,
    min_reward: float | None,
    as_json: bool,
) -> None:
    """Write a run's model calls, with rewards, tokens and logprobs, for training elsewhere.

    One row per model call, in the OpenAI chat format: `messages` is the request followed
    by the assistant's reply, with the episode's `reward`, the prompt and completion token
    ids, the per-token logprobs and the ids that locate the call (iteration, split, episode,
    item, call index, adapter tag, harness commit, model). Reads the ledger only, so it
    works on live runs. Loads with `datasets.load_dataset("json"|"parquet", ...)`.

    \b
    Examples:
        sia export run-20261122-001 --format jsonl --out rollouts.jsonl --split train
        sia export run-20261122-001 --out best.parquet --iteration 2 --min-reward 1 --json
    """
    ws = open_workspace(root)
    if _is_ledger_file(out, ws.ledger_path):
        raise ExportError(f"refusing to write {out}: it is this workspace's ledger")
    filters = ExportFilters(
        split=split, purpose=purpose, iteration=iteration, min_reward=min_reward
    )
    with ws.reader() as rec:
        refuse_altered(rec, run_id, "export")  # a training set must not carry a forgery on
        result = export_run(rec, run_id, out, fmt=fmt, filters=filters)
    if as_json:
        emit_json(result.to_dict())
    else:
        click.echo(
            f"wrote {result.rows} rows ({result.episodes} episodes) of run {run_id} "
            f"to {result.path} ({result.format})"
        )


def _is_ledger_file(out: Path, ledger: Path) -> bool:
    # The ledger file and the side files DuckDB and the ledger's locks keep next to it.
    names = {ledger.name + suffix for suffix in ("", ".wal", ".lock", ".readers")}
    target = out.resolve()
    return target.parent == ledger.resolve().parent and target.name in names
