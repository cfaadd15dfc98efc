import json

import pytest

from harness_repo import CommitNotFound, HarnessRepo, InvalidHarnessInput, TagConflict, TagNotFound
from tests.harness_repo.harness_fixtures import T0, edit, harness

DIGEST = "ab" * 32


def manifest(**extra):
    return {
        "sha256": DIGEST,
        "algorithm": "grpo",
        "rank": 8,
        "base_model": "SmolLM2-135M-Instruct",
        "config": {"lr": 1e-4, "steps": 50},
        "metrics": {"reward": 0.73},
        **extra,
    }


@pytest.fixture
def commits(repo):
    return [edit(repo, "r1", harness(f"print({i})\n"), i, i + 1) for i in range(2)]


def test_manifest_round_trips_through_the_tag(repo, commits):
    name = repo.tag_adapter("r1", 1, commits[1], manifest(), when=T0 + 500)
    assert name == "lora/r1/1" == HarnessRepo.adapter_tag_name("r1", 1)
    assert repo.adapter_manifest(name) == manifest()
    assert repo.adapter_manifest("refs/tags/" + name) == manifest()
    assert repo.tag_target(name) == commits[1]


def test_tag_message_is_a_summary_then_canonical_json(repo, commits, git):
    name = repo.tag_adapter("r1", 1, commits[1], manifest(), when=T0 + 500)
    raw = git(repo.path, "cat-file", "-p", name)
    assert f"object {commits[1]}" in raw
    assert "tagger SIA <sia@localhost> 1700000500 +0000" in raw
    summary, _, payload = raw.split("\n\n", 1)[1].partition("\n\n")
    assert summary == f"LoRA adapter for run r1 iteration 1: grpo, rank 8, sha256 {DIGEST[:12]}…"
    assert payload == json.dumps(manifest(), sort_keys=True, indent=2) + "\n"
    listed = git(repo.path, "tag", "-n99", "--list", "lora/*")
    assert listed.startswith("lora/r1/1       LoRA adapter for run r1 iteration 1")
    assert f'"sha256": "{DIGEST}"' in listed


def test_retagging_the_same_adapter_is_a_no_op(repo, commits):
    first = repo.tag_adapter("r1", 1, commits[1], manifest(), when=T0)
    again = repo.tag_adapter(
        "r1", 1, commits[1][:12], dict(reversed(manifest().items())), when=T0 + 9
    )
    assert first == again
    assert repo.adapter_tags("r1") == [first]


def test_retagging_differently_conflicts(repo, commits):
    repo.tag_adapter("r1", 1, commits[1], manifest(), when=T0)
    with pytest.raises(TagConflict, match="lora/r1/1 already points at"):
        repo.tag_adapter("r1", 1, commits[0], manifest(), when=T0)
    with pytest.raises(TagConflict, match=r"lora/r1/1 .*different manifest"):
        repo.tag_adapter("r1", 1, commits[1], manifest(rank=16), when=T0)
    assert repo.adapter_manifest("lora/r1/1")["rank"] == 8


def test_adapter_tags_sort_by_iteration_number(repo, commits):
    for iteration in (10, 2, 1):
        repo.tag_adapter("r1", iteration, commits[1], manifest(), when=T0)
    repo.tag_adapter("r10", 3, commits[0], manifest(), when=T0)
    assert repo.adapter_tags("r1") == ["lora/r1/1", "lora/r1/2", "lora/r1/10"]
    assert repo.adapter_tags("r10") == ["lora/r10/3"]
    assert repo.adapter_tags("r2") == []


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"sha256": "AB" * 32},
        {"sha256": "ab" * 31},
        {"sha256": DIGEST, "loss": float("nan")},
        {"sha256": DIGEST, "obj": object()},
    ],
)
def test_manifest_must_be_json_with_a_digest(repo, commits, bad):
    with pytest.raises(InvalidHarnessInput):
        repo.tag_adapter("r1", 1, commits[1], bad, when=T0)
    assert repo.adapter_tags("r1") == []


@pytest.mark.parametrize("iteration", [-1, True, 1.0, "1"])
def test_iteration_must_be_a_non_negative_int(repo, commits, iteration):
    with pytest.raises(InvalidHarnessInput, match="iteration"):
        repo.tag_adapter("r1", iteration, commits[1], manifest(), when=T0)


def test_missing_tags_and_targets(repo, commits):
    with pytest.raises(TagNotFound, match="lora/r1/7"):
        repo.adapter_manifest("lora/r1/7")
    with pytest.raises(TagNotFound):
        repo.tag_target("bad..name")
    with pytest.raises(CommitNotFound):
        repo.tag_adapter("r1", 1, "0" * 40, manifest(), when=T0)


def test_lightweight_tag_is_not_an_adapter_tag(repo, commits):
    repo._repo.references.create("refs/tags/lora/r1/5", commits[0])
    with pytest.raises(TagNotFound, match="lightweight"):
        repo.adapter_manifest("lora/r1/5")


def test_retagging_over_a_foreign_tag_conflicts(repo, commits):
    repo._repo.references.create("refs/tags/lora/r1/6", commits[0])
    with pytest.raises(TagConflict, match="not an adapter tag"):
        repo.tag_adapter("r1", 6, commits[0], manifest(), when=T0)
