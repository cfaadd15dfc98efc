"""Bad input at the command line: a damaged ledger file, an event record altered by hand,
malformed configs and option values, and malformed SIA-format task directories.

Every fault hits real files: a DuckDB ledger and a git repository made by two scripted runs
through the real CLI (``open_components`` is patched and counts its openings, so "refused
before a model loads" is checked, not assumed). After each fault the user gets one line
(no traceback) and a non-zero exit, and nothing is lost:

- a damaged ledger keeps its exact bytes, whatever command met it;
- an altered run keeps its rows exactly as the forger left them, and the other run of the
  same ledger stays intact, verifies clean and resumes to the end of an undisturbed run;
- a bad option, config or task directory is refused before any event is written.

The rule for altered runs (see ``sia/cli/integrity.py``): ``verify`` names the first bad seq
and its kind; commands that only show a run warn in one stderr line (or, if the altered
record no longer folds, stop with it); commands that build on a run refuse it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result

from ledger import DuckDBRecorder, NewEvent
from sia.audit import audit_run
from sia.cli import cli
from sia.config import RunConfig
from sia.history import run_state
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.codec import encode
from tasks.siadir.layout import MAX_FILE_BYTES
from tests.faults.accounting import difference, run_loss
from tests.faults.conftest import Faults
from tests.support.scripted import (
    simulate,
)
from tests.support.scripted_cli import Scripted, one_line, patch_components

ITERATIONS = 3
#: Two runs share the ledger: r1 is the one faults hit, r2 the bystander that must survive.
MODES = {"r1": "w+h", "r2": "h"}
#: Both runs stop (Ctrl-C) at this iteration's rollout, so both can still be resumed.
STOPPED_AT = 2
TASK_FIXTURE = Path(__file__).resolve().parents[1] / "support" / "sia_task"


# ── scripted components behind the real CLI ──────────────────────────────────────────────


def sia(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(root), *args])


def start(root: Path, run_id: str) -> Result:
    args = ["--mode", MODES[run_id], "--iterations", str(ITERATIONS), "--batch-size", "4"]
    return sia(root, "run", "--run-id", run_id, *args, "--quiet")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace holding r1 and r2, both stopped by Ctrl-C in iteration 2's rollout."""
    root = tmp_path_factory.mktemp("template") / "ws"
    with pytest.MonkeyPatch.context() as patch:
        for run_id in MODES:
            patch_components(patch, Scripted(interrupt_rollout=STOPPED_AT))
            stopped = start(root, run_id)
            assert stopped.exit_code == 130, stopped.output
    return root


@pytest.fixture
def ws(template: Path, tmp_path: Path) -> Workspace:
    """A private copy of the template workspace, free to damage."""
    return Workspace(Path(shutil.copytree(template, tmp_path / "ws")))


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Scripted:
    scripted = Scripted()
    patch_components(monkeypatch, scripted)
    return scripted


# ── what the files hold ──────────────────────────────────────────────────────────────────


def raw_rows(ws: Workspace, run_id: str) -> list[tuple[Any, ...]]:
    """Every stored row of the run, read with plain DuckDB: no decoding, duplicates kept."""
    con = duckdb.connect(str(ws.ledger_path), read_only=True)
    try:
        query = "SELECT * FROM events WHERE run_id = ? ORDER BY seq, hash"
        return [tuple(map(str, row)) for row in con.execute(query, [run_id]).fetchall()]
    finally:
        con.close()


def event_counts(ws: Workspace) -> dict[str, int]:
    con = duckdb.connect(str(ws.ledger_path), read_only=True)
    try:
        rows = con.execute("SELECT run_id, count(*) FROM events GROUP BY run_id").fetchall()
        return dict(rows)
    finally:
        con.close()


def first_seq(ws: Workspace, run_id: str, event_type: str) -> int:
    con = duckdb.connect(str(ws.ledger_path), read_only=True)
    try:
        query = "SELECT min(seq) FROM events WHERE run_id = ? AND type = ?"
        return con.execute(query, [run_id, event_type]).fetchone()[0]
    finally:
        con.close()


def sql(ws: Workspace, statement: str) -> None:
    con = duckdb.connect(str(ws.ledger_path))
    try:
        con.execute(statement)
    finally:
        con.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_refs(ws: Workspace) -> set[str]:
    """Every ref of the harness repository with the commit it names."""
    out = subprocess.run(
        ["git", "-C", str(ws.repo_path), "for-each-ref", "--format=%(refname) %(objectname)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.splitlines())


def written(ws: Workspace) -> set[str]:
    """Everything a command could add beside the ledger's rows: git refs, stored artifacts,
    the ledger's write-ahead log."""
    stored = {str(p.relative_to(ws.root)) for p in ws.artifacts_path.rglob("*")}
    wal = ws.ledger_path.with_name(ws.ledger_path.name + ".wal")
    return git_refs(ws) | stored | ({wal.name} if wal.exists() else set())


def finished_like_undisturbed(ws: Workspace, run_id: str) -> tuple[int, int]:
    """``(lost, duplicates)`` of a resumed run against an undisturbed one; asserts it is
    done and its record (chain, commits, tags, artifacts) holds together."""
    with ws.reader() as rec:
        state = run_state(rec, run_id)
        loss = run_loss(rec, run_id, simulate(run_id, iterations=ITERATIONS, mode=MODES[run_id]))
        audit = audit_run(rec, ws.repo(), ws.artifacts(), run_id)
    assert audit.ok, audit.problems
    assert state.status == "done"
    return loss


# ── 1. a damaged ledger file ─────────────────────────────────────────────────────────────


def _events_block(path: Path) -> int:
    """Byte offset of the first storage block holding the events table."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        block, size = con.execute(
            "SELECT min(block_id), any_value(block_size) FROM pragma_storage_info('events'), "
            "pragma_database_size() WHERE block_id >= 0"
        ).fetchone()
    finally:
        con.close()
    header = 3 * 4096  # DuckDB's file header: one main and two database headers
    return header + block * size


def _zero_events_block(path: Path) -> None:
    offset, data = _events_block(path), bytearray(path.read_bytes())
    data[offset : offset + 256 * 1024] = bytes(256 * 1024)
    path.write_bytes(bytes(data))


def _foreign(path: Path) -> None:
    path.unlink()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (id INTEGER, total DOUBLE)")
    con.close()


def _newer_schema(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()


def _garbage(path: Path) -> None:
    size = path.stat().st_size
    path.write_bytes(hashlib.sha256(b"noise").digest() * (size // 32))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "overwritten with garbage bytes": (_garbage, "not a readable SIA ledger"),
    "truncated to 1 KB": (lambda p: p.write_bytes(p.read_bytes()[:1024]), "not a readable"),
    "truncated to half": (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "not a readable SIA ledger",
    ),
    "with the events' block zeroed": (_zero_events_block, "not a readable SIA ledger (Corrupt"),
    "emptied": (lambda p: p.write_bytes(b""), "not a readable SIA ledger"),
    "replaced by a foreign DuckDB database": (_foreign, "not a readable SIA ledger (no meta"),
    "of a newer schema": (_newer_schema, "schema version 99, newer than"),
}

#: Every command that opens the ledger, each pointed at r1 where it takes a run.
LEDGER_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("status",),
    ("status", "--json"),
    ("log",),
    ("log", "r1"),
    ("why", "r1", "1"),
    ("episodes", "r1"),
    ("diff", "r1", "0", "1"),
    ("verify", "r1"),
    ("replay", "r1"),
    ("report", "r1", "--out", "{tmp}/r1.html"),
    ("export", "r1", "--out", "{tmp}/r1.jsonl"),
    ("evaluate", "r1"),
    ("bisect", "r1", "--recorded"),
    ("resume", "r1"),
    ("branch", "r1", "--at", "1"),
    ("run", "--run-id", "r3", "--mode", "h", "--iterations", "1", "--quiet"),
    ("experiment", "--modes", "h", "--seeds", "1", "--iterations", "1", "--name", "e"),
)


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_ledger_is_one_line_for_every_command_and_keeps_its_bytes(
    ws: Workspace, script: Scripted, tmp_path: Path, faults: Faults, damage: str
) -> None:
    injection = faults.inject(f"ledger file {damage}")
    make, message = DAMAGE[damage]
    make(ws.ledger_path)
    before, extra = sha256(ws.ledger_path), written(ws)
    answers, changed = [], 0
    for command in LEDGER_COMMANDS:
        answers.append((command, sia(ws.root, *(part.format(tmp=tmp_path) for part in command))))
        changed += sha256(ws.ledger_path) != before
    # The bytes are the evidence: each command that rewrote them may have lost events; what
    # was added (commits, tags, artifacts, a log) was written beside a ledger that cannot
    # record it, to be made again by the run that finally does. Accounted before the
    # checks, so a regression shows its cost in the summary, not only a failure.
    injection.account(lost=changed, duplicates=len(written(ws) - extra))
    for command, result in answers:
        line = one_line(result)
        assert result.exit_code == 1, (command, result.output)
        assert line.startswith("Error: ") and message in line, (command, line)
    assert not list(tmp_path.glob("r1.*")), "a refused command wrote its output file"
    assert script.opened == 0, "components (a model) were opened for a damaged ledger"
    assert (injection.lost, injection.duplicates) == (0, 0)


# ── 2. an event record altered by hand ───────────────────────────────────────────────────


@dataclass(frozen=True)
class Tamper:
    """An edit of r1's record, the event type it hits, the kind ``verify`` must name, and
    whether the altered record still folds into a state (then showing it only warns)."""

    statement: str
    event_type: str
    kind: str
    folds: bool


_NO_KEY = (
    "CREATE TABLE loose AS SELECT * FROM events; DROP TABLE events; "
    "ALTER TABLE loose RENAME TO events; "
)
_AT = "WHERE run_id = 'r1' AND seq = {seq}"

TAMPERS: dict[str, Tamper] = {
    "a payload edited in place": Tamper(
        f"UPDATE events SET payload = replace(payload, 'scripted', 'forged') {_AT}",
        "DecisionMade",
        "hash_mismatch",
        folds=True,
    ),
    "a score stored as text": Tamper(
        f'UPDATE events SET payload = json_merge_patch(payload, \'{{"score": "high"}}\') {_AT}',
        "Evaluated",
        "hash_mismatch",
        folds=False,
    ),
    "a payload that is no longer JSON": Tamper(
        "ALTER TABLE events ALTER payload TYPE VARCHAR; "
        f"UPDATE events SET payload = '{{\"rationale\": ' {_AT}",
        "DecisionMade",
        "hash_mismatch",
        folds=False,
    ),
    "an event type renamed": Tamper(
        f"UPDATE events SET type = 'Forged' {_AT}", "Evaluated", "hash_mismatch", folds=False
    ),
    "an event row deleted": Tamper(
        f"DELETE FROM events {_AT}", "RolloutCompleted", "gap", folds=False
    ),
    "an event row inserted twice": Tamper(
        _NO_KEY + f"INSERT INTO events SELECT * FROM events {_AT}",
        "HarnessCommitted",
        "duplicate",
        folds=False,
    ),
    "an event hash changed": Tamper(
        f"UPDATE events SET hash = repeat('0', 64) {_AT}", "Evaluated", "hash_mismatch", True
    ),
    "a link of the chain changed": Tamper(
        f"UPDATE events SET prev_hash = repeat('f', 64) {_AT}",
        "BatchPlanned",
        "broken_link",
        folds=True,
    ),
    "the run's head moved past its last event": Tamper(
        "UPDATE runs SET head_seq = head_seq + 5 WHERE run_id = 'r1'",
        "RunInterrupted",
        "truncated",
        folds=True,
    ),
}

#: Commands that build on a run, and the verb their refusal names.
BUILDING: dict[str, tuple[str, ...]] = {
    "resume": ("resume", "r1"),
    "branch": ("branch", "r1", "--at", "1"),
    "evaluate": ("evaluate", "r1"),
    "bisect": ("bisect", "r1", "--recorded"),
    "export": ("export", "r1", "--out", "{tmp}/r1.jsonl"),
    "report on": ("report", "r1", "--out", "{tmp}/r1.html"),
}
#: Commands that show one run.
SHOWING: tuple[tuple[str, ...], ...] = (
    ("log", "r1"),
    ("why", "r1", "1"),
    ("episodes", "r1"),
    ("diff", "r1", "0", "1"),
    ("log", "r1", "--json"),
)


@pytest.mark.parametrize("tamper", TAMPERS)
def test_an_altered_run_is_named_refused_or_flagged_and_its_neighbour_goes_on(
    ws: Workspace, script: Scripted, tmp_path: Path, faults: Faults, tamper: str
) -> None:
    injection = faults.inject(f"r1's ledger record: {tamper}")
    edit = TAMPERS[tamper]
    seq = first_seq(ws, "r1", edit.event_type)
    if edit.kind == "truncated":
        seq += 1  # verify names the first seq the head promises but the table lacks
    r2_before = raw_rows(ws, "r2")
    sql(ws, edit.statement.replace("{seq}", str(seq)))
    r1_altered, refs = raw_rows(ws, "r1"), git_refs(ws)
    named = f"seq {seq}: {edit.kind}:"

    # verify names the seq and kind on its first line; the bystander verifies clean.
    checked = sia(ws.root, "verify", "r1")
    assert checked.exit_code == 1 and checked.output.startswith(f"r1: {named}"), checked.output
    problems = json.loads(sia(ws.root, "verify", "r1", "--json").output)["problems"]
    assert (problems[0]["seq"], problems[0]["kind"]) == (seq, edit.kind)
    clean = sia(ws.root, "verify", "r2")
    assert clean.exit_code == 0 and "chain intact" in one_line(clean)

    for verb, command in BUILDING.items():
        result = sia(ws.root, *(part.format(tmp=tmp_path) for part in command))
        line = one_line(result)
        assert result.exit_code == 1 and line.startswith(f"Error: cannot {verb} r1: {named}"), line
    assert not list(tmp_path.glob("r1.*")), "a refused command wrote its output file"

    for command in SHOWING:
        result = sia(ws.root, *command)
        if edit.folds:
            # Shown, after one warning line on stderr; stdout stays the command's own.
            assert result.exit_code == 0, (command, result.output)
            warning = result.stderr.strip().splitlines()
            assert len(warning) == 1 and warning[0].startswith("Warning: run r1 was altered")
            assert named in warning[0] and result.stdout.strip(), (command, result.output)
        else:
            # The record no longer folds: the same line names the cause, not the symptom.
            line = one_line(result)
            assert result.exit_code == 1, (command, result.output)
            assert line.startswith(f"Error: cannot show r1: {named}"), line

    # The views of every run still list both: one altered run hides nothing.
    listed = sia(ws.root, "status", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert rows["r1"]["status"] == "tampered" and rows["r2"]["status"] == "running"
    assert named in listed.stderr and len(listed.stderr.strip().splitlines()) == 1
    table = sia(ws.root, "status")
    assert table.exit_code == 0 and "r2" in table.stdout and named in table.stderr
    tree = sia(ws.root, "log")
    assert tree.exit_code == 0 and "r1" in tree.stdout and "r2: mode h" in tree.stdout

    # Nothing was rewritten: r1 is as the forger left it, no branch or tag was made.
    assert raw_rows(ws, "r1") == r1_altered
    assert git_refs(ws) == refs
    assert script.opened == 0

    # The bystander resumes and ends like an undisturbed run, its stopped record kept.
    resumed = sia(ws.root, "resume", "r2", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert script.opened == 1
    lost, duplicates = finished_like_undisturbed(ws, "r2")
    kept_lost, _ = difference(r2_before, raw_rows(ws, "r2"))
    forged_lost, forged_duplicates = difference(r1_altered, raw_rows(ws, "r1"))
    injection.account(lost + kept_lost + forged_lost, duplicates + forged_duplicates)
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert sia(ws.root, "verify", "r2").exit_code == 0


# ── 3. malformed configs and option values ───────────────────────────────────────────────


#: (arguments, exit code, what the one line must say). Exit 2 is click's usage error.
BAD_OPTIONS: dict[str, tuple[tuple[str, ...], int, str]] = {
    "negative iterations": (("run", "--iterations", "-1"), 2, "'--iterations': -1 is not in"),
    "iterations not a number": (("run", "--iterations", "three"), 2, "'three' is not a valid"),
    "batch size 0": (("run", "--batch-size", "0"), 2, "'--batch-size': 0 is not in the range"),
    "group size 0": (("run", "--group-size", "0"), 2, "'--group-size': 0 is not in"),
    "lora rank 0": (("run", "--lora-rank", "0"), 2, "'--lora-rank': 0 is not in"),
    "no training processes": (("run", "--train-processes", "0"), 2, "'--train-processes'"),
    "a token budget of 0": (("run", "--tokens", "0"), 2, "'--tokens': 0 is not in"),
    "a wall budget of 0 s": (("run", "--wall-seconds", "0"), 2, "'--wall-seconds': 0"),
    "a rollout temperature of 9": (("run", "--rollout-temperature", "9"), 2, "'--rollout-"),
    "an unknown mode": (("run", "--mode", "x"), 2, "'--mode': 'x' is not one of"),
    "an unknown task": (("run", "--task", "nope"), 2, "'--task': unknown task 'nope'"),
    "an unknown algorithm": (("run", "--algorithm", "sgd-magic"), 1, "unknown algorithm"),
    "an unknown backend": (("run", "--backend", "tpu"), 2, "'--backend': 'tpu' is not one"),
    "openai without an endpoint": (("run", "--backend", "openai"), 1, "needs --endpoint"),
    "a run id git refuses": (("run", "--run-id", "a..b"), 1, "a..b"),
    "a task dir that is a file": (("run", "--task-dir", "{file}"), 2, "'--task-dir'"),
    "an unknown option": (("run", "--iteration", "3"), 2, "No such option '--iteration'"),
    "branch at a negative iteration": (("branch", "r1", "--at", "-1"), 2, "'--at': -1"),
    "branch with batch size 0": (("branch", "r1", "--at", "1", "--batch-size", "0"), 2, "0"),
    "resume without a run": (("resume",), 2, "Missing argument 'RUN_ID'"),
    "an unknown split": (("evaluate", "r1", "--split", "dev"), 2, "'--split': 'dev'"),
    "iterations not numbers": (("evaluate", "r1", "--iterations", "1,x"), 1, "numbers like"),
    "a watch interval of 0": (("status", "--watch", "--interval", "0"), 2, "'--interval'"),
    "an experiment with batch size 0": (("experiment", "--batch-size", "0"), 2, "'--batch-"),
    "an experiment of -1 iterations": (("experiment", "--iterations", "-1"), 2, "-1 is not"),
    "an experiment with no wall time": (("experiment", "--wall-seconds", "0"), 2, "'--wall"),
    "an experiment at temperature 9": (("experiment", "--rollout-temperature", "9"), 2, "9"),
    "an experiment of rank 0": (("experiment", "--lora-rank", "0"), 2, "'--lora-rank': 0"),
    "an experiment mode that is not one": (
        ("experiment", "--modes", "h,x", "--seeds", "1"),
        1,
        "x",
    ),
}


@pytest.mark.parametrize("case", BAD_OPTIONS)
def test_a_bad_option_value_is_one_line_before_anything_is_written(
    ws: Workspace, script: Scripted, tmp_path: Path, faults: Faults, case: str
) -> None:
    injection = faults.inject(f"CLI option: {case}")
    args, code, message = BAD_OPTIONS[case]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    counts, before, extra = event_counts(ws), sha256(ws.ledger_path), written(ws)
    result = sia(ws.root, *(arg.format(file=a_file) for arg in args))
    line = one_line(result)
    assert result.exit_code == code, result.output
    assert line.startswith("Error: ") and message in line, line
    if code == 2:
        assert line.endswith("--help`)"), line  # where the usage block went
    lost, duplicates = difference(_events(counts), _events(event_counts(ws)))
    injection.account(lost, duplicates + len(written(ws) - extra))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert sha256(ws.ledger_path) == before
    assert script.opened == 0


def _events(counts: dict[str, int]) -> list[tuple[str, int]]:
    """Per-run event counts as countable keys, for ``difference``."""
    return [(run_id, n) for run_id, total in counts.items() for n in range(total)]


def _store_run(ws: Workspace, run_id: str, config: dict[str, Any]) -> None:
    """Append a run whose stored config is ``config``, through the ledger's own API, so its
    hash chain is intact: what an older SIA, or a hand-made ledger, might hold."""
    started = ev.RunStarted(task="arith-v1", mode="h", seed=0, config=config)
    with DuckDBRecorder(ws.ledger_path) as rec:
        rec.append(run_id, [NewEvent(*encode(started))], expected_seq=0, ts=time.time())


_GOOD = RunConfig(task="arith-v1", mode="h", batch_size=4).to_dict()

BAD_STORED_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "a number stored as text": ({**_GOOD, "batch_size": "4"}, "batch_size must be int, got '4'"),
    "a flag stored as a number": ({**_GOOD, "shard_base": 1}, "shard_base must be bool, got 1"),
    "an unknown key": ({**_GOOD, "batchsize": 4}, "unknown config keys: batchsize"),
    "a value out of range": ({**_GOOD, "batch_size": 0}, "batch_size must be ≥ 1, got 0"),
    "a budget of the wrong type": (
        {**_GOOD, "budget": {"iterations": "3"}},
        "budget.iterations must be int, got '3'",
    ),
    "a negative budget": ({**_GOOD, "budget": {"iterations": -3}}, "budget.iterations must be"),
    "an unknown budget key": ({**_GOOD, "budget": {"iters": 3}}, "unknown budget key 'iters'"),
    "an unknown mode": ({**_GOOD, "mode": "hw"}, "mode must be one of"),
}


@pytest.mark.parametrize("case", BAD_STORED_CONFIGS)
@pytest.mark.parametrize("command", [("resume", "r3"), ("branch", "r3", "--at", "0")])
def test_a_malformed_stored_run_config_is_one_line_naming_run_and_field(
    ws: Workspace, script: Scripted, faults: Faults, case: str, command: tuple[str, ...]
) -> None:
    injection = faults.inject(f"stored run config: {case} ({command[0]})")
    config, message = BAD_STORED_CONFIGS[case]
    _store_run(ws, "r3", config)
    counts, extra = event_counts(ws), written(ws)
    result = sia(ws.root, *command)
    line = one_line(result)
    assert result.exit_code == 1
    assert line.startswith("Error: run r3's stored config: ") and message in line, line
    lost, duplicates = difference(_events(counts), _events(event_counts(ws)))
    injection.account(lost, duplicates + len(written(ws) - extra))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert script.opened == 0


BAD_DEFINITIONS: dict[str, tuple[str, str]] = {
    "not JSON": ('{"definition": ', "Expecting value"),
    "without its definition": ('{"name": "e"}', "no 'definition'"),
    "seeds that are not numbers": (
        json.dumps({"definition": {"name": "e", "modes": ["h"], "seeds": ["a"], "options": {}}}),
        "not an experiment definition: seeds: invalid literal for int()",
    ),
    "a definition without its modes": (
        json.dumps({"definition": {"name": "e", "seeds": [0], "options": {}}}),
        "not an experiment definition: no modes",
    ),
    "a definition that is a list": ('{"definition": []}', "not an experiment definition"),
}


@pytest.mark.parametrize("case", BAD_DEFINITIONS)
def test_a_malformed_experiment_definition_is_one_line_naming_the_file(
    ws: Workspace, script: Scripted, faults: Faults, case: str
) -> None:
    injection = faults.inject(f"experiment definition file {case}")
    text, message = BAD_DEFINITIONS[case]
    stored = ws.root / "experiments" / "e.json"
    stored.parent.mkdir()
    stored.write_text(text)
    counts, extra = event_counts(ws), written(ws)
    args = ["--modes", "h", "--seeds", "1", "--iterations", "1", "--batch-size", "4"]
    result = sia(ws.root, "experiment", "--name", "e", *args)
    line = one_line(result)
    assert result.exit_code == 1
    assert line.startswith(f"Error: cannot read {stored}: ") and message in line, line
    assert stored.read_text() == text  # the user's file is theirs to fix, not ours to replace
    lost, duplicates = difference(_events(counts), _events(event_counts(ws)))
    injection.account(lost, duplicates + len(written(ws) - extra))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert script.opened == 0


# ── 4. malformed task directories ────────────────────────────────────────────────────────


def _rewrite_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _drop_key(index: int, key: str) -> Callable[[list[dict]], list[dict]]:
    def change(entries: list[dict]) -> list[dict]:
        del entries[index][key]
        return entries

    return change


def _sparse(path: Path, size: int) -> None:
    with path.open("ab") as handle:
        handle.truncate(size)  # a hole: huge to stat, nothing on disk


QUESTIONS, ANSWERS = "data/public/questions.json", "data/private/answers.json"

#: (how the copy of the sums task is broken, what the one line must say after the dir).
BROKEN_TASKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "items file not JSON": (
        lambda d: (d / QUESTIONS).write_text('[{"id": "q00",'),
        "questions.json: Expecting property name",
    ),
    "items file an empty list": (
        lambda d: (d / QUESTIONS).write_text("[]"),
        "data/public/questions.json is an empty list",
    ),
    "two items only": (
        lambda d: _rewrite_json(d / QUESTIONS, lambda q: q[:2]),
        "questions.json lists 2 item(s); a run needs at least 3",
    ),
    "an item without its id": (
        lambda d: _rewrite_json(d / QUESTIONS, _drop_key(3, "id")),
        "questions.json: entry 3 (of 12) has no 'id'",
    ),
    "a repeated item id": (
        lambda d: _rewrite_json(d / QUESTIONS, lambda q: [*q, q[0]]),
        "questions.json repeats the id 'q00'",
    ),
    "an item without a label": (
        lambda d: _rewrite_json(d / ANSWERS, lambda a: a[1:]),
        "answers.json has no label for 1 item(s): 'q00'",
    ),
    "labels not JSON": (
        lambda d: (d / ANSWERS).write_text("{"),
        "answers.json: Expecting property name",
    ),
    "no evaluator": (
        lambda d: (d / "data/public/evaluate.py").unlink(),
        "data/public/evaluate.py is missing",
    ),
    "an evaluator that is a directory": (
        lambda d: (
            (d / "data/public/evaluate.py").unlink(),
            (d / "data/public/evaluate.py").mkdir(),
        ),
        "data/public/evaluate.py is missing",
    ),
    "an evaluator that does not parse": (
        lambda d: (d / "data/public/evaluate.py").write_text("def main(:\n"),
        "evaluate.py does not parse (line 1",
    ),
    "an evaluator linked from outside": (
        lambda d: (
            (d / "data/public/evaluate.py").unlink(),
            (d / "data/public/evaluate.py").symlink_to(TASK_FIXTURE / "data/public/evaluate.py"),
        ),
        "data/public/evaluate.py links outside the task dir",
    ),
    "a public file linked to /etc/passwd": (
        lambda d: (d / "data/public/notes.txt").symlink_to("/etc/passwd"),
        "data/public/notes.txt links outside the task dir (to /etc/passwd)",
    ),
    "a public folder linked to /etc": (
        lambda d: (d / "data/public/more").symlink_to("/etc"),
        "data/public/more links outside the task dir (to /etc)",
    ),
    "a public folder linked to data/": (
        lambda d: (d / "data/public/up").symlink_to(d / "data"),
        "data/public/up links to data, which holds data/private/",
    ),
    "a huge public file": (
        lambda d: _sparse(d / "data/public/big.txt", MAX_FILE_BYTES + 1),
        f"data/public/big.txt is {(MAX_FILE_BYTES + 1) >> 20} MB; task files over",
    ),
    "a huge items file": (
        lambda d: _sparse(d / QUESTIONS, 4 * MAX_FILE_BYTES),
        f"data/public/questions.json is {MAX_FILE_BYTES >> 18} MB",
    ),
    "a task description that is not text": (
        lambda d: (d / "data/public/task.md").write_bytes(b"\xff\xfe\x00"),
        "data/public/task.md is not UTF-8 text",
    ),
    "no task description": (
        lambda d: (d / "data/public/task.md").unlink(),
        "data/public/task.md is missing",
    ),
    "sia-task.json not JSON": (
        lambda d: (d / "sia-task.json").write_text('{"metric": '),
        "sia-task.json is not JSON",
    ),
    "sia-task.json with an unknown key": (
        lambda d: (d / "sia-task.json").write_text('{"metrics": "accuracy"}'),
        "sia-task.json has unknown keys ['metrics']",
    ),
    "sia-task.json with a number as text": (
        lambda d: (d / "sia-task.json").write_text('{"metric_scale": "0.01"}'),
        "sia-task.json: metric_scale must be a number > 0, got '0.01'",
    ),
    "sia-task.json with a negative timeout": (
        lambda d: (d / "sia-task.json").write_text('{"timeout_s": -5}'),
        "sia-task.json: timeout_s must be a number > 0, got -5",
    ),
    "sia-task.json naming items by number": (
        lambda d: (d / "sia-task.json").write_text('{"records": 5}'),
        "sia-task.json: records must be a non-empty string, got 5",
    ),
    "sia-task.json naming a missing items file": (
        lambda d: (d / "sia-task.json").write_text('{"records": "data/public/gone.json"}'),
        "records 'data/public/gone.json' is not in data/public",
    ),
}


@pytest.mark.parametrize("broken", BROKEN_TASKS)
def test_a_malformed_task_dir_is_one_line_naming_file_and_problem_before_any_event(
    ws: Workspace, script: Scripted, tmp_path: Path, faults: Faults, broken: str
) -> None:
    injection = faults.inject(f"task dir: {broken}")
    task = Path(shutil.copytree(TASK_FIXTURE, tmp_path / "sums"))
    breakage, message = BROKEN_TASKS[broken]
    breakage(task)
    counts, before, extra = event_counts(ws), sha256(ws.ledger_path), written(ws)
    for args in (
        ("tasks", "check", f"dir:{task}"),
        ("run", "--task-dir", str(task), "--run-id", "r9", "--iterations", "1", "--quiet"),
    ):
        result = sia(ws.root, *args)
        line = one_line(result)
        assert result.exit_code == 1, (args, result.output)
        assert str(task) in line and message in line, (args, line)
    lost, duplicates = difference(_events(counts), _events(event_counts(ws)))
    injection.account(lost, duplicates + len(written(ws) - extra))
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert sha256(ws.ledger_path) == before
    assert script.opened == 0


def test_the_unbroken_task_dir_runs_through_the_same_commands(
    ws: Workspace, script: Scripted, tmp_path: Path
) -> None:
    """The control: the checks above refuse what is broken, not every task dir."""
    task = Path(shutil.copytree(TASK_FIXTURE, tmp_path / "sums"))
    checked = sia(ws.root, "tasks", "check", f"dir:{task}")
    assert checked.exit_code == 0 and "all" in checked.output
    ran = sia(ws.root, "run", "--task-dir", str(task), "--run-id", "r9", "--iterations", "1")
    assert ran.exit_code == 0, ran.output
    assert script.opened == 1 and event_counts(ws)["r9"] > 1
