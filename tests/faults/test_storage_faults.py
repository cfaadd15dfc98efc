"""Storage faults: a disk that fills up while an adapter is stored, adapters and tags that go
missing or rot, a commit made by hand on a run's branch, and two processes after one run.

Every fault hits a real workspace (DuckDB ledger, git repository, artifact store) through
the real CLI; only the model-backed components are scripted (``open_components`` is
patched, and counts its calls, so "refused before a model loads" is checked, not assumed).
After each fault the user sees one line, nothing is lost, and the recovery the line names
leaves a run that cannot be told from an undisturbed one.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from harness_repo import ArtifactStore
from sia.audit import audit_run
from sia.cli import cli
from sia.errors import RunNotResumable
from sia.history import run_state
from sia.ports import TrainRequest
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine import fold
from statemachine.replay import envelopes
from tests.faults.accounting import difference, run_loss
from tests.sia.test_orchestrator import structure
from tests.support.any_number import registered
from tests.support.run_scripted import orchestrator
from tests.support.scripted import (
    simulate,
)
from tests.support.scripted_cli import Scripted, one_line, patch_components

RUN, ITERATIONS = "r1", 3


# ── scripted components behind the real CLI ──────────────────────────────────────────────


class _Stop(Exception):
    """A SIGKILL stand-in: it escapes the orchestrator with nothing recorded."""


def sia(ws: Workspace, *args: str) -> Result:
    return CliRunner().invoke(cli, ["-w", str(ws.root), *args])


def start(ws: Workspace, mode: str) -> Result:
    args = ["--mode", mode, "--iterations", str(ITERATIONS), "--batch-size", "4", "--quiet"]
    return sia(ws, "run", "--run-id", RUN, *args)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


@pytest.fixture
def script(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> Scripted:
    scripted = Scripted()
    patch_components(monkeypatch, scripted)
    return scripted


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """The adapter digests of undisturbed w+h and w runs: a recovered run must store these."""
    digests = {}
    with pytest.MonkeyPatch.context() as patch:
        for mode in ("w+h", "w"):
            ws = Workspace.create(tmp_path_factory.mktemp("undisturbed"))
            patch.setattr("sia.cli.write.open_components", Scripted().open)
            assert start(ws, mode).exit_code == 0
            digests[mode] = ws.artifacts().digests()
    return digests


def rows(ws: Workspace) -> list[tuple[int, str]]:
    """The run's ledger rows as (seq, hash): what "the ledger is untouched" compares."""
    with ws.reader() as rec:
        return [(r.seq, r.hash) for r in rec.read(RUN)]


def check_finished(ws: Workspace, mode: str, digests: list[str]) -> tuple[int, int]:
    """``(lost, duplicates)`` of the finished run; asserts it equals an undisturbed one."""
    expected = simulate(RUN, iterations=ITERATIONS, mode=mode)
    with ws.reader() as rec:
        state = run_state(rec, RUN)
        loss = run_loss(rec, RUN, expected)
        audit = audit_run(rec, ws.repo(), ws.artifacts(), RUN)
        tags = [e.event for e in envelopes(rec.read(RUN)) if isinstance(e.event, ev.AdapterTagged)]
    assert audit.ok, audit.problems
    assert state.status == "done"
    assert structure(state) == structure(fold(RUN, expected))
    assert [t.tag for t in tags] == ws.repo().adapter_tags(RUN)
    assert ws.artifacts().digests() == sorted({t.sha256 for t in tags}) == digests
    assert not list((ws.artifacts_path / "tmp").glob("*"))
    return loss


# ── 1. the disk fills up while the adapter is stored ─────────────────────────────────────


def _no_space(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _store_copy_fills(monkeypatch: pytest.MonkeyPatch, space: dict[str, bool]) -> None:
    """The store's copy of the second adapter file stops halfway on ENOSPC."""
    original = ArtifactStore._copy
    copies = []

    def copy(src: Path, dst: Path) -> str:
        copies.append(dst)
        if space["full"] and len(copies) == 2:
            dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
            raise _no_space(dst)
        return original(src, dst)

    monkeypatch.setattr(ArtifactStore, "_copy", staticmethod(copy))


def _store_listing_fills(monkeypatch: pytest.MonkeyPatch, space: dict[str, bool]) -> None:
    """The store's ``<digest>.sha256sum`` listing, written once every file is copied, stops
    halfway on ENOSPC."""
    original = Path.write_bytes

    def write_bytes(self: Path, data: bytes) -> int:
        if space["full"] and self.name.endswith(".sha256sum"):
            original(self, bytes(data)[: len(data) // 2])
            raise _no_space(self)
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def _trainer_fills(exc: Callable[[Path], BaseException], file: str):
    def install(monkeypatch: pytest.MonkeyPatch, space: dict[str, bool], script: Scripted):
        def fault(request: TrainRequest, out: Path) -> None:
            if space["full"]:
                target = out / file
                target.write_bytes(target.read_bytes()[:7])  # what got written before ENOSPC
                raise exc(target)

        script.train_fault = fault

    return install


def _safetensors_full(path: Path) -> BaseException:
    # What safetensors (peft's adapter writer) raised on a full 64 KiB tmpfs, verbatim.
    from safetensors import SafetensorError

    return SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )


FULL_DISKS = {
    "store copies the weights": (lambda m, s, _: _store_copy_fills(m, s), "storing adapter"),
    "store writes the listing": (lambda m, s, _: _store_listing_fills(m, s), "storing adapter"),
    "trainer writes its config": (
        _trainer_fills(_no_space, "adapter_config.json"),
        "the trainer wrote the adapter",
    ),
    "trainer writes its weights": (
        _trainer_fills(_safetensors_full, "adapter_model.safetensors"),
        "the trainer wrote the adapter",
    ),
}


@pytest.mark.parametrize("where", FULL_DISKS)
def test_a_full_disk_while_an_adapter_is_stored_stops_cleanly_and_resumes(
    ws, script, monkeypatch, faults, undisturbed, where
):
    install, doing = FULL_DISKS[where]
    space = {"full": True}
    install(monkeypatch, space, script)
    injection = faults.inject(f"disk full while the {where}")
    failed = start(ws, "w+h")
    assert failed.exit_code == 1
    line = one_line(failed)
    assert line.startswith(f"Error: no space left on device while {doing}"), line
    assert line.endswith(
        f"run {RUN} stopped in TRAIN of iteration 2 with nothing recorded: "
        f"free space, then: sia resume {RUN}"
    ), line
    with ws.reader() as rec:
        state = run_state(rec, RUN)
        assert audit_run(rec, ws.repo(), ws.artifacts(), RUN).ok
        kinds = {type(e.event) for e in envelopes(rec.read(RUN))}
    assert (state.status, state.phase.value, state.iteration) == ("running", "TRAIN", 2)
    assert ev.AdapterTagged not in kinds and ws.repo().adapter_tags(RUN) == []
    # No artifact, half-copied file, listing or temporary folder is left in the store.
    assert [p for p in ws.artifacts_path.rglob("*") if not p.is_dir()] == []
    space["full"] = False
    resumed = sia(ws, "resume", RUN, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    injection.account(*check_finished(ws, "w+h", undisturbed["w+h"]))
    assert (injection.lost, injection.duplicates) == (0, 0)


# ── 2. adapters and tags that go missing or rot ──────────────────────────────────────────


def _delete_artifact(ws: Workspace, tag: str, digest: str) -> str:
    shutil.rmtree(ws.artifacts_path / "sha256" / digest)
    return f"artifact sha256:{digest} is not in the store {ws.artifacts_path}"


def _corrupt_artifact(ws: Workspace, tag: str, digest: str) -> str:
    weights = ws.artifacts_path / "sha256" / digest / "adapter_model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return (
        f"artifact sha256:{digest} in {ws.artifacts_path} is corrupt: "
        "adapter_model.safetensors changed"
    )


def _delete_tag(ws: Workspace, tag: str, digest: str) -> str:
    subprocess.run(
        ["git", "-C", str(ws.repo_path), "tag", "-d", tag], check=True, capture_output=True
    )
    return f"tag '{tag}' not found in {ws.repo_path}"


DAMAGES = {
    "adapter deleted": _delete_artifact,
    "adapter corrupted": _corrupt_artifact,
    "adapter tag deleted": _delete_tag,
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_missing_or_corrupt_adapter_is_named_and_refused_before_a_model_loads(
    ws, script, monkeypatch, faults, undisturbed, damage
):
    # Mode w: iteration 1's adapter is the best, so the resumed rollout of iteration 3
    # would need it; the run is stopped (Ctrl-C) just before that rollout.
    script.interrupt_rollout = 3
    assert start(ws, "w").exit_code == 130
    with ws.reader() as rec:
        tagged = {
            e.event.tag: e.event
            for e in envelopes(rec.read(RUN))
            if isinstance(e.event, ev.AdapterTagged)
        }
    best = tagged[f"lora/{RUN}/1"]
    injection = faults.inject(f"{damage} between a stop and a resume")
    problem = DAMAGES[damage](ws, best.tag, best.sha256)
    before = rows(ws)

    servings = []
    monkeypatch.setattr("sia.wiring.open_serving", lambda *a, **k: servings.append(a))
    verify = sia(ws, "verify", RUN)
    assert verify.exit_code == 1
    assert one_line(verify).startswith(f"{RUN}: seq ") and problem in verify.output
    assert best.tag in verify.output
    restore = "restore what it names, or branch the run from an earlier iteration"
    for command, refusal, advice in [
        (["resume", RUN], f"Error: cannot resume {RUN}: seq ", restore),
        (["evaluate", RUN], "Error: ", ""),
        (["replay", RUN, "--rerun"], f"Error: cannot rerun {RUN}: seq ", f"sia verify {RUN}"),
    ]:
        out = sia(ws, *command)
        assert out.exit_code == 1, (command, out.output)
        line = one_line(out)
        assert line.startswith(refusal) and problem in line and advice in line, command
    assert script.opened == 1 and servings == []  # only the original run loaded a "model"
    lost, duplicates = difference(before, rows(ws))

    # Restored from a backup (the same files, the same manifest), the run goes on.
    if damage == "adapter tag deleted":
        ws.repo().tag_adapter(RUN, 1, best.harness_commit, best.manifest, when=time.time())
    else:
        ws.artifacts().put(ws.root / "scratch" / f"adapter-{RUN}-1")
    resumed = sia(ws, "resume", RUN, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    more_lost, more_duplicates = check_finished(ws, "w", undisturbed["w"])
    injection.account(lost + more_lost, duplicates + more_duplicates)
    assert (injection.lost, injection.duplicates) == (0, 0)


# ── 3. a commit made by hand on the run's branch ─────────────────────────────────────────


def _commit_by_hand(ws: Workspace, tmp_path: Path) -> str:
    """What a user poking at the workspace does: check the branch out, edit, commit."""
    tree = tmp_path / "checkout"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
    }

    def git(*args: str, cwd: Path = ws.repo_path) -> str:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    git("worktree", "add", str(tree), f"runs/{RUN}")
    (tree / "NOTES.md").write_text("try a longer system prompt\n")
    git("add", "NOTES.md", cwd=tree)
    git("commit", "-m", "Hand tweak", cwd=tree)
    sha = git("rev-parse", "HEAD", cwd=tree)
    git("worktree", "remove", str(tree))
    return sha


def _kill_after_commit(nth: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Die (nothing recorded) right after SIA's ``nth`` commit, as SIA_CRASH_AT would."""
    reached = []

    def crash_point(name: str) -> None:
        if name == "after-commit":
            reached.append(name)
            if len(reached) == nth:
                raise _Stop(name)

    monkeypatch.setattr("sia.orchestrator.crash_point", crash_point)


STOPS = {
    "interrupted at a rollout": None,  # the tip is a recorded commit
    "killed after SIA's commit": 2,  # the hand-made commit sits on SIA's unrecorded one
}


@pytest.mark.parametrize("stop", STOPS)
def test_a_commit_made_by_hand_on_the_run_branch_is_named_and_kept(
    ws, script, monkeypatch, faults, tmp_path, stop
):
    if STOPS[stop] is None:
        script.interrupt_rollout = 2
        assert start(ws, "w+h").exit_code == 130
    else:
        with monkeypatch.context() as patch:
            _kill_after_commit(STOPS[stop], patch)
            assert isinstance(start(ws, "w+h").exception, _Stop)
    injection = faults.inject(f"a commit by hand on the run branch ({stop})")
    sha = _commit_by_hand(ws, tmp_path)
    before = rows(ws)

    verify = sia(ws, "verify", RUN)
    assert verify.exit_code == 1
    named = [line for line in verify.output.splitlines() if "foreign-commit" in line]
    assert len(named) == 1 and sha[:12] in named[0] and "'Hand tweak'" in named[0]
    refused = sia(ws, "resume", RUN)
    assert refused.exit_code == 1 and script.opened == 1
    line = one_line(refused)
    assert line.startswith(
        f"Error: cannot resume {RUN}: branch runs/{RUN} holds a commit SIA "
        f"did not make (newest {sha[:12]} 'Hand tweak')"
    ), line
    # The library refuses too (scripts and the kill tests resume through it), and before
    # reconciling, which would otherwise reset the branch over the hand-made commit.
    with ws.writer() as rec, pytest.raises(RunNotResumable, match=sha[:12]):
        orchestrator(ws, rec, "w+h").resume(RUN)
    assert ws.repo().branch_tip(RUN) == sha
    lost, duplicates = difference(before, rows(ws))

    # The user does what the line says, word for word.
    assert line.endswith(f"; then: sia resume {RUN}"), line
    recovery = line.partition(", run: ")[2].removesuffix(f"; then: sia resume {RUN}")
    subprocess.run(recovery, shell=True, check=True, capture_output=True)
    kept = subprocess.run(
        ["git", "-C", str(ws.repo_path), "rev-parse", f"kept-{sha[:12]}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert kept == sha and ws.repo().files_at(sha)["NOTES.md"] == b"try a longer system prompt\n"
    resumed = sia(ws, "resume", RUN, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    expected = simulate(RUN, iterations=ITERATIONS, mode="w+h")
    with ws.reader() as rec:
        state = run_state(rec, RUN)
        notes = [
            n
            for e in envelopes(rec.read(RUN))
            if isinstance(e.event, ev.RunResumed)
            for n in e.event.reconciled
        ]
        more_lost, more_duplicates = run_loss(rec, RUN, expected)
        assert audit_run(rec, ws.repo(), ws.artifacts(), RUN).ok
    assert state.status == "done" and structure(state) == structure(fold(RUN, expected))
    # SIA's own commit under the hand-made one was adopted, not made again.
    assert any(n.startswith("adopted commit") for n in notes) == (STOPS[stop] is not None)
    assert sha not in [c.sha for c in ws.repo().log(RUN)] and ws.repo().has_commit(sha)
    injection.account(lost + more_lost, duplicates + more_duplicates)
    assert (injection.lost, injection.duplicates) == (0, 0)


# ── 4. two processes after one run ───────────────────────────────────────────────────────


def blocked_run(root: str, gate: str) -> None:
    """``sia run`` (scripted) that holds still at iteration 1's rollout until ``gate`` exists.

    Run in a process of its own by the test below: ``python -c "...blocked_run(...)"``.
    """
    ready, release = Path(gate + ".ready"), Path(gate)

    def hold(iteration: int) -> None:
        if iteration != 1:
            return
        ready.touch()
        deadline = time.monotonic() + 120  # never hang the suite if the test dies first
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    script = Scripted(block_rollout=hold)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sia.cli.write.open_components", script.open)
        args = ["--mode", "w+h", "--iterations", str(ITERATIONS), "--batch-size", "4"]
        cli.main(["-w", root, "run", "--run-id", RUN, *args, "--quiet"], prog_name="sia")


def test_a_second_process_on_a_running_run_is_refused_and_writes_nothing(ws, tmp_path, faults):
    gate = tmp_path / "gate"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    code = "from tests.faults.test_storage_faults import blocked_run; blocked_run(*sys.argv[1:])"
    first = subprocess.Popen(
        [sys.executable, "-c", f"import sys; {code}", str(ws.root), str(gate)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{gate}.ready").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        before = rows(ws)
        commits = subprocess.run(
            ["git", "-C", str(ws.repo_path), "rev-list", "--all"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        sia_cli = [sys.executable, "-m", "sia.cli", "-w", str(ws.root)]
        seconds = [
            ("sia run", [*sia_cli, "run", "--run-id", RUN, "--mode", "w+h", "--iterations", "3"]),
            ("sia resume", [*sia_cli, "resume", RUN]),
        ]
        injections = []
        for name, command in seconds:
            injections.append(faults.inject(f"{name} while another process drives the run"))
            second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert second.returncode == 1, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and second.stdout == "", second
            assert lines[0].startswith(
                f"Error: ledger {ws.ledger_path} is being written by pid {first.pid} (python -c"
            ), lines[0]
            assert lines[0].endswith(f"or stop it with: kill {first.pid}"), lines[0]
        # Nothing was written by either: not an event, not a commit.
        assert rows(ws) == before
        assert (
            subprocess.run(
                ["git", "-C", str(ws.repo_path), "rev-list", "--all"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            == commits
        )
        gate.touch()
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    expected = simulate(RUN, iterations=ITERATIONS, mode="w+h")
    with ws.reader() as rec:
        loss = run_loss(rec, RUN, expected)
        state = run_state(rec, RUN)
        assert audit_run(rec, ws.repo(), ws.artifacts(), RUN).ok
    assert state.status == "done" and structure(state) == structure(fold(RUN, expected))
    for injection in injections:
        injection.account(*loss)
        assert (injection.lost, injection.duplicates) == (0, 0)


# ── 1b. the same, with the real trainer and the tiny model ───────────────────────────────


def _tiny(ws: Path, model: Path, *extra: str) -> Result:
    args = ["-w", str(ws), "run", "--mode", "w", "--policy", str(model), "--task", "any-number"]
    args += ["--iterations", "1", "--batch-size", "2", "--algorithm", "bon_bc", "--run-id", RUN]
    return CliRunner().invoke(cli, [*args, "--quiet", *extra])


@pytest.fixture(scope="module")
def tiny_whole(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    """An undisturbed tiny-model run: its history and its adapter's weights."""
    ws = tmp_path_factory.mktemp("tiny-whole") / "ws"
    with registered():
        assert _tiny(ws, tiny_model_dir).exit_code == 0
    whole = Workspace.open(ws)
    with whole.reader() as rec:
        return list(envelopes(rec.read(RUN))), _weights(whole)


def _weights(ws: Workspace) -> bytes:
    """The stored adapter's weights. Not the folder's digest: its training record holds
    the training's wall time, which no two trainings share."""
    (digest,) = ws.artifacts().digests()
    return (ws.artifacts().path(digest) / "adapter_model.safetensors").read_bytes()


def _weights_fill_the_disk(monkeypatch: pytest.MonkeyPatch, space: dict[str, bool]) -> None:
    """peft writes the config, then safetensors stops halfway through the weights."""
    from safetensors import SafetensorError

    import rl.train

    original = rl.train.save_adapter

    def save_adapter(model, out_dir: Path, heads=None) -> None:
        original(model, out_dir, heads)
        if space["full"]:
            weights = Path(out_dir) / "adapter_model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            raise SafetensorError(
                "Error while serializing: I/O error: No space left on device (os error 28)"
            )

    monkeypatch.setattr(rl.train, "save_adapter", save_adapter)


def _a_worker_fills_the_disk(monkeypatch: pytest.MonkeyPatch, space: dict[str, bool]) -> None:
    """A training worker dies of ENOSPC; the launcher passes its error on as text."""
    from rl.errors import RLError

    def train_distributed(job_dir: Path, *args: Any, **kwargs: Any):
        raise RLError(
            f"training worker failed: OSError: [Errno 28] No space left on device: "
            f"'{job_dir}/out/adapter_model.safetensors'"
        )

    monkeypatch.setattr("rl.launch.train_distributed", train_distributed)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_full_disk_in_the_real_trainer_stops_the_run_instead_of_abandoning_it(
    tmp_path, tiny_model_dir, tiny_whole, monkeypatch, faults, processes
):
    history, weights = tiny_whole
    space = {"full": True}
    if processes == 1:
        _weights_fill_the_disk(monkeypatch, space)
    else:
        _a_worker_fills_the_disk(monkeypatch, space)
    injection = faults.inject(f"disk full while {processes} training process(es) save")
    ws = tmp_path / "ws"
    with registered():
        failed = _tiny(ws, tiny_model_dir, "--train-processes", str(processes))
    assert failed.exit_code == 1, failed.output
    line = one_line(failed)
    assert line.startswith("Error: no space left on device while the trainer wrote the adapter")
    assert "stopped in TRAIN of iteration 1 with nothing recorded" in line, line
    workspace = Workspace.open(ws)
    with workspace.reader() as rec:
        state = run_state(rec, RUN)
        tagged = next(e.seq for e in history if isinstance(e.event, ev.AdapterTagged))
        # Everything the undisturbed run held before its tag is here, once; a full disk is
        # no verdict on the candidate, so nothing abandons it.
        loss = run_loss(rec, RUN, [e for e in history if e.seq < tagged])
        kinds = {type(e.event) for e in envelopes(rec.read(RUN))}
        assert audit_run(rec, workspace.repo(), workspace.artifacts(), RUN).ok
    assert (state.status, state.phase.value) == ("running", "TRAIN")
    assert ev.CandidateAbandoned not in kinds and ev.AdapterTagged not in kinds
    assert workspace.artifacts().digests() == []
    if processes == 1:
        space["full"] = False
        with registered():
            resumed = CliRunner().invoke(cli, ["-w", str(ws), "resume", RUN, "--quiet"])
        assert resumed.exit_code == 0, resumed.output
        with workspace.reader() as rec:
            loss = run_loss(rec, RUN, history)
        # Trained again from the same rollouts and seed: the very adapter of the whole run.
        assert _weights(workspace) == weights
    injection.account(*loss)
    assert (injection.lost, injection.duplicates) == (0, 0)
