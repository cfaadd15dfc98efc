import pytest

from harness_repo import (
    CommitNotFound,
    HarnessRepo,
    HarnessRepoError,
    InvalidHarnessInput,
    RepoNotFound,
)
from tests.harness_repo.harness_fixtures import T0, edit, harness


def test_commit_then_read_back_nested_files(repo):
    files = harness()
    sha = edit(repo, "r1", files, 0, 1)
    assert len(sha) == 40
    assert repo.files_at(sha) == files
    assert repo.files_at(sha[:10]) == files
    assert repo.branch_tip("r1") == sha
    assert repo.has_commit(sha)


def test_commit_is_a_full_snapshot_so_dropped_files_disappear(repo):
    first = edit(repo, "r1", harness(), 0, 1)
    slim = {"agent.py": b"print('slim')\n"}
    second = edit(repo, "r1", slim, 1, 2)
    assert repo.files_at(second) == slim
    assert repo.changed_files(first, second) == [
        "agent.py",
        "config.json",
        "prompts/fewshot/one.txt",
        "prompts/system.txt",
    ]


def test_same_inputs_give_the_same_commit_id(tmp_path):
    shas = []
    for name in ("a.git", "b.git"):
        repo = HarnessRepo.init(tmp_path / name)
        root = edit(repo, "r1", harness(), 0, 1)
        shas.append((root, edit(repo, "r1", harness("print('v2')\n"), 1, 5)))
    assert shas[0] == shas[1]


def test_time_and_trailers_change_the_commit_id(tmp_path):
    a = edit(HarnessRepo.init(tmp_path / "a.git"), "r1", harness(), 0, 1, when=T0)
    b = edit(HarnessRepo.init(tmp_path / "b.git"), "r1", harness(), 0, 1, when=T0 + 1)
    c = edit(HarnessRepo.init(tmp_path / "c.git"), "r1", harness(), 0, 2, when=T0)
    assert len({a, b, c}) == 3


def test_commit_info_reads_subject_body_trailers_time(repo):
    rationale = "Ask for the bare number\n\nEpisodes 3 and 7 answered in words."
    sha = edit(repo, "r1", harness(), 2, 9, rationale=rationale)
    info = repo.commit_info(sha)
    assert info.sha == sha
    assert info.parents == ()
    assert info.subject == "Ask for the bare number"
    assert info.body == "Episodes 3 and 7 answered in words."
    assert info.trailers == {"Sia-Run": "r1", "Sia-Iteration": "2", "Sia-Event": "9"}
    assert info.time == T0 + 120
    assert info.message.startswith("Ask for the bare number\n\nEpisodes 3")


def test_git_log_tells_the_story_of_the_run(repo, git):
    edit(repo, "r1", harness(), 0, 1, rationale="Initial harness from the task spec")
    edit(repo, "r1", harness("print('v2')\n"), 1, 6, rationale="Retry once on a parse error")
    edit(repo, "r1", harness("print('v3')\n"), 2, 11, rationale="Add two few-shot sums")
    fmt = "|".join(
        [
            "%s",
            "%an <%ae>",
            "%(trailers:key=Sia-Iteration,valueonly,separator=)",
            "%(trailers:key=Sia-Event,valueonly,separator=)",
        ]
    )
    lines = git(repo.path, "log", f"--format={fmt}", "runs/r1").splitlines()
    assert lines == [
        "Add two few-shot sums|SIA <sia@localhost>|2|11",
        "Retry once on a parse error|SIA <sia@localhost>|1|6",
        "Initial harness from the task spec|SIA <sia@localhost>|0|1",
    ]
    assert [c.subject for c in repo.log("r1")] == [line.split("|")[0] for line in lines]
    # git's own trailer parser agrees with ours.
    parsed = git(repo.path, "log", "-1", "--format=%(trailers:only,unfold)", "runs/r1")
    assert parsed.strip().splitlines() == ["Sia-Run: r1", "Sia-Iteration: 2", "Sia-Event: 11"]


def test_repository_is_bare_and_plain_git_log_works(repo, git):
    edit(repo, "r1", harness(), 0, 1, rationale="Initial harness")
    assert git(repo.path, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(repo.path, "log", "--format=%s").strip() == "Initial harness"
    git(repo.path, "fsck", "--strict")


def test_diff_contains_the_changed_line(repo):
    a = edit(repo, "r1", harness(system="You solve sums.\n"), 0, 1)
    b = edit(repo, "r1", harness(system="Answer with the number only.\n"), 1, 2)
    patch = repo.diff(a, b)
    assert "--- a/prompts/system.txt" in patch
    assert "-You solve sums." in patch
    assert "+Answer with the number only." in patch
    assert "agent.py" not in patch
    assert repo.changed_files(a, b) == ["prompts/system.txt"]
    assert repo.diff(a, a) == ""
    assert repo.changed_files(b, b) == []


def test_materialize_writes_a_runnable_folder(repo, tmp_path):
    sha = edit(repo, "r1", harness(), 0, 1)
    out = repo.materialize(sha, tmp_path / "work" / "h")
    assert (out / "prompts" / "fewshot" / "one.txt").read_bytes() == b"1+1=2\n"
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(harness())
    with pytest.raises(InvalidHarnessInput, match="not empty"):
        repo.materialize(sha, out)


def test_unknown_commits_raise_commit_not_found(repo):
    edit(repo, "r1", harness(), 0, 1)
    for bad in ("0" * 40, "deadbeef", "not-a-sha", ""):
        with pytest.raises(CommitNotFound):
            repo.files_at(bad)
        assert not repo.has_commit(bad)
    with pytest.raises(CommitNotFound, match="0000000000"):
        repo.commit_info("0" * 40)


def test_a_tree_id_is_not_a_commit(repo):
    sha = edit(repo, "r1", harness(), 0, 1)
    tree = repo._repo[sha].tree_id
    with pytest.raises(CommitNotFound, match="not a commit"):
        repo.files_at(str(tree))


@pytest.mark.parametrize(
    "files",
    [
        {"/abs.txt": b""},
        {"a//b": b""},
        {"../up": b""},
        {"./here": b""},
        {".git/config": b""},
        {"win\\path": b""},
        {"text.txt": "not bytes"},
        {"a": b"file", "a/b": b"and folder"},
    ],
)
def test_bad_snapshots_are_rejected(repo, files):
    with pytest.raises(InvalidHarnessInput):
        repo.commit("r1", files, message="x", trailers={}, when=T0)
    assert repo.branch_tip("r1") is None


@pytest.mark.parametrize("run_id", ["", "a b", "a/b", ".hidden", "end.", "x.lock", "a..b", "é"])
def test_bad_run_ids_are_rejected(repo, run_id):
    with pytest.raises(InvalidHarnessInput, match="run id"):
        repo.commit(run_id, harness(), message="x", trailers={}, when=T0)


def test_run_branch_name(repo):
    assert HarnessRepo.run_branch("r-1.a_b") == "runs/r-1.a_b"


def test_sia_run_trailer_is_added_and_must_match(repo):
    sha = repo.commit("r1", harness(), message="x", trailers={}, when=T0)
    assert repo.commit_info(sha).trailers == {"Sia-Run": "r1"}
    with pytest.raises(InvalidHarnessInput, match="Sia-Run"):
        repo.commit("r1", harness(), message="x", trailers={"Sia-Run": "r2"}, when=T0)


@pytest.mark.parametrize("when", [float("nan"), float("inf"), -1, True])
def test_bad_times_are_rejected(repo, when):
    with pytest.raises(InvalidHarnessInput, match="time"):
        repo.commit("r1", harness(), message="x", trailers={}, when=when)


def test_open_missing_or_foreign_paths(tmp_path):
    with pytest.raises(RepoNotFound, match="does not exist"):
        HarnessRepo.open(tmp_path / "nope")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "file.txt").write_text("hi")
    with pytest.raises(RepoNotFound, match="not a git repository"):
        HarnessRepo.open(plain)
    with pytest.raises(RepoNotFound):
        HarnessRepo.init(plain)
    assert isinstance(RepoNotFound("x"), HarnessRepoError)


def test_init_reopens_an_existing_repository(tmp_path):
    first = HarnessRepo.init(tmp_path / "h.git")
    sha = edit(first, "r1", harness(), 0, 1)
    again = HarnessRepo.init(tmp_path / "h.git")
    assert again.branch_tip("r1") == sha
    assert HarnessRepo.open(tmp_path / "h.git").files_at(sha) == harness()
