"""`sia export`: a real run's recorded calls written as JSONL and Parquet training rows.

One recorded run on the tiny model (mode h, one iteration, batch 2: a rollout, two val
evaluations and a test evaluation, every call with token ids and logprobs) in a real
DuckDB ledger. Each exported row is checked against the ledger's own tables, both files
are loaded with Hugging Face ``datasets``, and bad inputs fail on one line writing nothing.
"""

import json
import math
import os
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import sia.cli.export  # noqa: F401  (registers `sia export`)
from sia.cli import cli
from sia.export import ROW_SCHEMA, ExportFilters, export_rows, write_jsonl, write_parquet
from sia.workspace import Workspace
from tests.support.any_number import registered

RUN = "r"


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory, tiny_model_dir) -> Workspace:
    root = tmp_path_factory.mktemp("export") / "ws"
    args = ["-w", str(root), "run", "--mode", "h", "--policy", str(tiny_model_dir)]
    args += ["--task", "any-number", "--iterations", "1", "--batch-size", "2"]
    with registered():
        out = CliRunner().invoke(cli, [*args, "--run-id", RUN, "--quiet"])
    assert out.exit_code == 0, out.output
    return Workspace.open(root)


def _export(ws: Workspace, *args: str):
    return CliRunner().invoke(cli, ["-w", str(ws.root), "export", RUN, *args])


def _ledger_rows(ws: Workspace, **filters) -> list[dict]:
    """What the export must hold, built from the ledger's tables and the run's first event."""
    with ws.reader() as rec:
        episodes = rec.read_episodes(RUN)
        calls = rec.read_calls(RUN)
        policy = rec.read(RUN)[0].payload["config"]["policy"]
    by_episode = defaultdict(list)
    for call in calls:
        by_episode[call.iteration, call.episode_id].append(call)
    rows = []
    for ep in episodes:
        if filters.get("split") not in (None, ep.split):
            continue
        if filters.get("purpose") not in (None, ep.purpose):
            continue
        if filters.get("iteration") not in (None, ep.iteration):
            continue
        if "min_reward" in filters and (ep.reward is None or ep.reward < filters["min_reward"]):
            continue
        for call in sorted(by_episode[ep.iteration, ep.episode_id], key=lambda c: c.call_index):
            sent = json.loads(call.messages_json)
            chat = isinstance(sent, list)
            rows.append(
                {
                    "run_id": RUN,
                    "iteration": ep.iteration,
                    "purpose": ep.purpose,
                    "split": ep.split,
                    "episode_id": ep.episode_id,
                    "item_id": ep.item_id,
                    "call_index": call.call_index,
                    "endpoint": "chat" if chat else "completions",
                    "messages": [*sent, {"role": "assistant", "content": call.completion_text}]
                    if chat
                    else None,
                    "prompt": None if chat else sent,
                    "completion": call.completion_text,
                    "prompt_ids": call.prompt_ids,
                    "completion_ids": call.completion_ids,
                    "logprobs": call.logprobs,
                    "finish_reason": call.finish_reason,
                    "temperature": call.temperature,
                    "top_p": call.top_p,
                    "reward": ep.reward,
                    "status": ep.status,
                    "answer": ep.answer,
                    "reward_detail": ep.reward_detail,
                    "adapter_tag": call.adapter_tag,
                    "harness_commit": call.harness_commit,
                    "model": policy,
                }
            )
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_recorded_run_has_what_the_export_needs(run_ws):
    rows = _ledger_rows(run_ws)
    assert {(r["purpose"], r["split"]) for r in rows} == {
        ("rollout", "train"),
        ("eval", "val"),
        ("eval", "test"),
    }
    assert {r["iteration"] for r in rows} == {0, 1}
    assert all(r["prompt_ids"] and r["completion_ids"] for r in rows)
    assert all(len(r["logprobs"]) == len(r["completion_ids"]) for r in rows)
    assert any(r["endpoint"] == "chat" for r in rows)


@pytest.mark.parametrize(
    ("args", "filters"),
    [
        ((), {}),
        (("--split", "train"), {"split": "train"}),
        (("--split", "val"), {"split": "val"}),
        (("--split", "test"), {"split": "test"}),
        (("--purpose", "rollout"), {"purpose": "rollout"}),
        (("--iteration", "0"), {"iteration": 0}),
        (("--iteration", "1"), {"iteration": 1}),
        (("--min-reward", "1"), {"min_reward": 1.0}),
        (("--min-reward", "0.5", "--split", "val"), {"min_reward": 0.5, "split": "val"}),
        (("--iteration", "0", "--purpose", "rollout"), {"iteration": 0, "purpose": "rollout"}),
    ],
)
def test_jsonl_rows_are_the_ledgers_calls_for_each_filter(run_ws, tmp_path, args, filters):
    out = tmp_path / "rows.jsonl"
    result = _export(run_ws, "--format", "jsonl", "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    expected = _ledger_rows(run_ws, **filters)
    episodes = {(r["iteration"], r["episode_id"]) for r in expected}
    assert result.output == (
        f"wrote {len(expected)} rows ({len(episodes)} episodes) of run {RUN} to {out} (jsonl)\n"
    )
    rows = _read_jsonl(out)
    assert len(rows) == len(expected)
    assert all(list(row) == ROW_SCHEMA.names for row in rows)
    assert rows == expected
    # Every call of a kept episode is exported, each with its episode's reward.
    with run_ws.reader() as rec:
        n_calls = {(e.iteration, e.episode_id): e.n_calls for e in rec.read_episodes(RUN)}
    assert len(rows) == sum(n_calls[key] for key in episodes)


def test_filters_select_different_rows(run_ws):
    total = len(_ledger_rows(run_ws))
    counts = {split: len(_ledger_rows(run_ws, split=split)) for split in ("train", "val", "test")}
    assert all(counts.values()) and sum(counts.values()) == total
    assert 0 < len(_ledger_rows(run_ws, iteration=0)) < total
    rewards = {r["reward"] for r in _ledger_rows(run_ws)}
    assert len(rewards) > 1  # so --min-reward has something to drop
    assert 0 < len(_ledger_rows(run_ws, min_reward=max(rewards))) < total


def test_chat_rows_end_with_the_assistant_reply(run_ws, tmp_path):
    out = tmp_path / "all.jsonl"
    assert _export(run_ws, "--out", str(out)).exit_code == 0
    for row in _read_jsonl(out):
        if row["endpoint"] == "chat":
            *request, reply = row["messages"]
            assert request and all(set(m) == {"role", "content"} for m in request)
            assert reply == {"role": "assistant", "content": row["completion"]}
            assert row["prompt"] is None
        else:
            assert row["messages"] is None and isinstance(row["prompt"], str)


def test_parquet_and_jsonl_load_with_datasets_as_the_same_rows(run_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    jsonl, parquet = tmp_path / "rows.jsonl", tmp_path / "rows.parquet"
    assert _export(run_ws, "--format", "jsonl", "--out", str(jsonl)).exit_code == 0
    summary = _export(run_ws, "--format", "parquet", "--out", str(parquet), "--json")
    assert summary.exit_code == 0, summary.output
    expected = _ledger_rows(run_ws)
    assert json.loads(summary.stdout) == {
        "run_id": RUN,
        "path": str(parquet),
        "format": "parquet",
        "rows": len(expected),
        "episodes": len({(r["iteration"], r["episode_id"]) for r in expected}),
    }
    assert pq.read_schema(parquet).equals(ROW_SCHEMA)
    cache = str(tmp_path / "cache")
    from_json = datasets.load_dataset("json", data_files=str(jsonl), split="train", cache_dir=cache)
    from_parquet = datasets.load_dataset(
        "parquet", data_files=str(parquet), split="train", cache_dir=cache
    )
    # float32 logprobs read back as the same Python floats the ledger returns.
    assert from_json.to_list() == expected
    assert from_parquet.to_list() == expected


def test_an_export_with_no_rows_is_a_valid_empty_file(run_ws, tmp_path):
    rewards = [r["reward"] for r in _ledger_rows(run_ws)]
    above = str(max(rewards) + 1)
    jsonl, parquet = tmp_path / "none.jsonl", tmp_path / "none.parquet"
    assert _export(run_ws, "--out", str(jsonl), "--min-reward", above).exit_code == 0
    out = _export(run_ws, "--out", str(parquet), "--min-reward", above)
    assert out.exit_code == 0 and out.output.startswith("wrote 0 rows (0 episodes)")
    assert jsonl.read_bytes() == b""
    table = pq.read_table(parquet)
    assert table.num_rows == 0 and table.schema.equals(ROW_SCHEMA)


def test_an_existing_output_is_replaced_whole(run_ws, tmp_path):
    out = tmp_path / "rows.jsonl"
    out.write_text("old\n" * 1000)
    assert _export(run_ws, "--out", str(out), "--split", "train").exit_code == 0
    assert _read_jsonl(out) == _ledger_rows(run_ws, split="train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--split", "dev"), "unknown split 'dev' (splits: train, val, test)"),
        (("--purpose", "train"), "unknown purpose 'train' (purposes: rollout, eval, smoke)"),
        (("--iteration", "7"), f"run {RUN} has no iteration 7 (has: 0, 1)"),
        (("--iteration", "-1"), "iteration must be an integer >= 0, not -1"),
        (("--min-reward", "nan"), "min reward must be a finite number, not nan"),
        (("--format", "csv"), "unknown format 'csv' (formats: jsonl, parquet)"),
    ],
)
def test_bad_filters_are_one_line_errors_and_leave_the_output_alone(
    run_ws, tmp_path, args, message
):
    out = tmp_path / "rows.jsonl"
    result = _export(run_ws, "--out", str(out), *args)
    assert result.exit_code == 1
    assert result.output == f"Error: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_unknown_run_and_unwritable_paths_are_one_line_errors(run_ws, tmp_path):
    def fails(run: str, out: Path, *extra: str) -> str:
        result = CliRunner().invoke(
            cli, ["-w", str(run_ws.root), "export", run, "--out", str(out), *extra]
        )
        assert result.exit_code == 1
        assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output
        return result.output.strip()

    kept = tmp_path / "kept.jsonl"
    kept.write_text("keep me\n")
    assert fails("nope", kept) == "Error: no run named nope in this workspace"
    assert kept.read_text() == "keep me\n"
    assert fails(RUN, tmp_path / "rows.txt") == (
        f"Error: cannot tell the format of {tmp_path / 'rows.txt'} from its suffix; "
        "give --format jsonl|parquet"
    )
    assert fails(RUN, tmp_path / "missing" / "rows.jsonl") == (
        f"Error: cannot write {tmp_path / 'missing' / 'rows.jsonl'}: "
        f"no directory {tmp_path / 'missing'}"
    )
    assert fails(RUN, kept / "rows.jsonl").startswith(f"Error: cannot write {kept / 'rows.jsonl'}")
    folder = tmp_path / "folder"
    folder.mkdir()
    assert fails(RUN, folder, "--format", "jsonl") == (
        f"Error: cannot write {folder}: it is a directory"
    )
    assert fails(RUN, run_ws.ledger_path, "--format", "parquet") == (
        f"Error: refusing to write {run_ws.ledger_path}: it is this workspace's ledger"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "kept.jsonl"]
    assert list(folder.iterdir()) == []
    # The refused ledger is still the run's ledger.
    with run_ws.reader() as rec:
        assert rec.verify(RUN).ok


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_directory_is_a_one_line_error(run_ws, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = _export(run_ws, "--out", str(locked / "rows.jsonl"))
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot write {locked / 'rows.jsonl'}: directory {locked} is not writable\n"
    )
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("writer", [write_jsonl, write_parquet])
@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_write_that_fails_midway_leaves_the_old_file(run_ws, tmp_path, writer, failure):
    out = tmp_path / "rows.out"
    out.write_bytes(b"previous export")

    def failing_after_three():
        with run_ws.reader() as rec:
            for n, row in enumerate(export_rows(rec, RUN, ExportFilters()), start=1):
                yield row
                if n == 3:
                    raise failure("stopped mid-write")

    with pytest.raises(failure, match="stopped mid-write"):
        writer(failing_after_three(), out)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.out"]


def test_non_finite_logprobs_become_null_in_jsonl_only(run_ws, tmp_path):
    with run_ws.reader() as rec:
        rows = list(export_rows(rec, RUN, ExportFilters(split="train")))
    rows[0]["logprobs"][0] = -math.inf
    write_jsonl(rows, tmp_path / "rows.jsonl")
    write_parquet(rows, tmp_path / "rows.parquet")
    assert _read_jsonl(tmp_path / "rows.jsonl")[0]["logprobs"][0] is None
    assert pq.read_table(tmp_path / "rows.parquet")["logprobs"][0][0].as_py() == -math.inf
