import pytest

from harness_repo import BranchConflict, BranchNotFound
from tests.harness_repo.harness_fixtures import edit, harness


def step(repo, run_id, agent, iteration, event, parent=None):
    return edit(repo, run_id, harness(agent), iteration, event, parent=parent)


@pytest.fixture
def three(repo):
    return [step(repo, "r1", f"print({i})\n", i, 10 * i + 1) for i in range(3)]


def test_each_edit_is_one_commit_on_a_linear_branch(repo, three):
    history = repo.log("r1")
    assert [c.sha for c in history] == three[::-1]
    assert [c.parents for c in history] == [(three[1],), (three[0],), ()]


def test_branch_from_an_earlier_commit_shares_the_ancestor(repo, three, git):
    assert repo.create_branch("r2", three[1]) == "runs/r2"
    fork = step(repo, "r2", "print('fork')\n", 2, 5)
    assert repo.commit_info(fork).parents == (three[1],)
    assert repo.branches() == ["r1", "r2"]
    assert [c.sha for c in repo.log("r2")] == [fork, three[1], three[0]]

    graph = git(repo.path, "log", "--graph", "--all", "--oneline")
    assert "r2 edit 2" in graph and "r1 edit 2" in graph
    # Both tips are drawn on separate lanes that join at the shared ancestor.
    assert "|/" in graph
    assert graph.count("r1 edit 1") == 1
    base = git(repo.path, "merge-base", "runs/r1", "runs/r2").strip()
    assert base == three[1]


def test_explicit_parent_starts_a_new_branch(repo, three):
    fork = step(repo, "r3", "print('x')\n", 1, 2, parent=three[0])
    assert repo.commit_info(fork).parents == (three[0],)
    assert repo.branch_tip("r3") == fork


def test_explicit_parent_that_is_not_the_tip_conflicts(repo, three):
    with pytest.raises(BranchConflict, match="runs/r1"):
        step(repo, "r1", "print('stale')\n", 3, 40, parent=three[1])
    assert repo.branch_tip("r1") == three[2]
    assert step(repo, "r1", "print('ok')\n", 3, 40, parent=three[2])


def test_create_branch_is_idempotent_but_will_not_move(repo, three):
    repo.create_branch("r2", three[0])
    repo.create_branch("r2", three[0])
    with pytest.raises(BranchConflict, match="runs/r2"):
        repo.create_branch("r2", three[1])
    assert repo.branch_tip("r2") == three[0]


def test_find_commit_by_trailer(repo, three):
    assert repo.find_commit("r1", {"Sia-Event": "11"}) == three[1]
    assert repo.find_commit("r1", {"Sia-Event": "11", "Sia-Iteration": "1"}) == three[1]
    assert repo.find_commit("r1", {"Sia-Event": "11", "Sia-Iteration": "2"}) is None
    assert repo.find_commit("r1", {"Sia-Event": "999"}) is None
    assert repo.find_commit("nobranch", {"Sia-Event": "1"}) is None


def test_find_commit_ignores_the_parent_runs_commits(repo, three):
    repo.create_branch("r2", three[2])
    # r1's event 11 is in r2's history, but it is not r2's event 11.
    assert repo.find_commit("r2", {"Sia-Event": "11"}) is None
    assert repo.find_commit("r2", {"Sia-Run": "r1", "Sia-Event": "11"}) == three[1]
    mine = step(repo, "r2", "print('r2')\n", 3, 11)
    assert repo.find_commit("r2", {"Sia-Event": "11"}) == mine


def test_reset_branch_discards_an_orphan_commit(repo, three, git):
    orphan = step(repo, "r1", "print('orphan')\n", 3, 31)
    repo.reset_branch("r1", three[2])
    assert repo.branch_tip("r1") == three[2]
    assert repo.find_commit("r1", {"Sia-Event": "31"}) is None
    assert orphan not in git(repo.path, "log", "--all", "--format=%H")
    # Re-doing the same edit reproduces the same commit instead of a second one.
    assert step(repo, "r1", "print('orphan')\n", 3, 31) == orphan
    repo.reset_branch("r1", orphan)


def test_reset_branch_only_moves_backwards(repo, three):
    other = step(repo, "r2", "print('other')\n", 0, 1)
    with pytest.raises(BranchConflict, match="not an ancestor"):
        repo.reset_branch("r1", other)
    with pytest.raises(BranchNotFound, match="nobranch"):
        repo.reset_branch("nobranch", three[0])
    with pytest.raises(BranchNotFound):
        repo.log("nobranch")
