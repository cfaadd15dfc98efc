"""Unified diffs apply exactly or not at all."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sia.agents.patches import PatchError, apply_patch, creation_diff, patched
from tests.agents.claude_fake import unified as diff

OLD = "line one\nline two\nline three\nline four\nline five\nline six\nline seven\nline eight\n"


def test_modifies_a_file_with_several_hunks():
    new = OLD.replace("line two", "line 2").replace("line eight", "line 8\nline nine")
    patch = diff("f.txt", OLD, new, n=1)
    assert patch.count("@@") == 4  # two hunks
    assert apply_patch({"f.txt": OLD.encode()}, patch) == {"f.txt": new}


def test_git_style_headers_and_prose_are_tolerated():
    new = OLD.replace("line three", "line 3")
    patch = "diff --git a/f.txt b/f.txt\nindex 1234..5678 100644\n" + diff("f.txt", OLD, new)
    assert apply_patch({"f.txt": OLD.encode()}, "Here is my change:\n" + patch)["f.txt"] == new


def test_creates_and_deletes_files():
    create = "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1,2 @@\n+x = 1\n+y = 2\n"
    delete = "--- a/old.txt\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-a\n-b\n"
    changes = apply_patch({"old.txt": b"a\nb\n"}, create + delete)
    assert changes == {"new.py": "x = 1\ny = 2\n", "old.txt": None}


def test_a_missing_final_newline_marker_is_understood():
    marker = "\\ No newline at end of file\n"
    patch = f"--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n{marker}+c\n{marker}"
    assert apply_patch({"f": b"a\nb"}, patch) == {"f": "a\nc\n"}


@pytest.mark.parametrize(
    ("files", "patch", "message"),
    [
        ({"f": b"a\nb\n"}, "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-x\n+y\n", "line 2 is 'b'"),
        ({}, "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", "does not exist"),
        ({"n": b""}, "--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n", "already exists"),
        ({"f": b"a\n"}, "--- a/f\n+++ b/g\n@@ -1 +1 @@\n-a\n+b\n", "renames"),
        ({"f": b"a\n"}, "--- a/../f\n+++ b/../f\n@@ -1 +1 @@\n-a\n+b\n", "unsafe path"),
        ({"f": b"a\n"}, "--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "unsafe"),
        ({"f": b"a\nb\n"}, "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n", "truncated"),
        ({"f": b"a\n"}, "--- a/f\n+++ b/f\n@@ nonsense @@\n", "malformed hunk header"),
        ({"f": b"a\n"}, "--- a/f\n@@ -1 +1 @@\n", "without a"),
        ({"f": b"a\n"}, "please make it better", "no file changes"),
        ({"f": b"a\nb\n"}, "--- a/f\n+++ /dev/null\n@@ -1 +0,0 @@\n-a\n", "remove every line"),
        ({"f": b"\xff\n"}, "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n", "not UTF-8"),
    ],
)
def test_refusals_name_the_problem(files, patch, message):
    with pytest.raises(PatchError, match=message):
        apply_patch(files, patch)


def test_hunks_out_of_order_are_refused():
    new = OLD.replace("line two", "2").replace("line seven", "7")
    hunks = diff("f", OLD, new, n=0).split("@@ -")
    swapped = hunks[0] + "@@ -" + hunks[2] + "@@ -" + hunks[1]
    with pytest.raises(PatchError, match="out of order"):
        apply_patch({"f": OLD.encode()}, swapped)


lines = st.lists(st.sampled_from(["a", "b", "c", "def f():", "    return 1", ""]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(old=lines, new=lines, context=st.integers(0, 3))
def test_any_difflib_diff_applies_back_to_its_target(old, new, context):
    before = "".join(line + "\n" for line in old)
    after = "".join(line + "\n" for line in new)
    patch = diff("f", before, after, n=context)
    if not patch:
        return  # identical texts: difflib writes nothing
    assert apply_patch({"f": before.encode()}, patch) == {"f": after}


def test_a_whole_harness_is_recorded_as_a_diff_that_recreates_it():
    files = {"agent.py": b"def solve(c, i, k):\n    return '1'\n", "harness.json": b"{}"}
    recreated = patched({}, apply_patch({}, creation_diff(files)))
    assert recreated == {"agent.py": files["agent.py"], "harness.json": b"{}\n"}
    assert patched(recreated, {"harness.json": None}) == {"agent.py": files["agent.py"]}
