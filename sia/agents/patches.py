"""Unified diffs proposed by an agent, applied strictly to a harness's files.

Strict means every hunk's context and removed lines must match the file exactly at the
stated line (no fuzz, no offset search): a patch written against a different version of a
file is refused with the line that differs, so what gets committed is exactly what the
agent read and meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sia.agents.errors import AgentError

__all__ = ["PatchError", "apply_patch", "creation_diff", "patched"]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_NEWLINE = "\\ No newline at end of file"


class PatchError(AgentError):
    """A patch that does not parse or does not apply."""


@dataclass
class _FilePatch:
    old: str | None  # None: the file is created
    new: str | None  # None: the file is deleted
    hunks: list[tuple[int, list[str]]]  # (old start line, body lines with their ' '/'-'/'+')


def _path(header: str, prefix: str) -> str | None:
    name = header[4:].split("\t", 1)[0].strip()
    if name == "/dev/null":
        return None
    if name.startswith(prefix):
        name = name[len(prefix) :]
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise PatchError(f"patch names an unsafe path: {name!r}")
    return name


def _parse(diff: str) -> list[_FilePatch]:
    lines = diff.splitlines()
    patches: list[_FilePatch] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("--- "):
            i += 1  # "diff --git", "index …" and prose between files carry nothing we need
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("+++ "):
            raise PatchError(f"line {i + 1}: '---' header without a '+++' line after it")
        patch = _FilePatch(_path(lines[i], "a/"), _path(lines[i + 1], "b/"), [])
        if patch.old is None and patch.new is None:
            raise PatchError(f"line {i + 1}: both sides are /dev/null")
        i += 2
        while i < len(lines) and lines[i].startswith("@@"):
            match = _HUNK.match(lines[i])
            if match is None:
                raise PatchError(f"line {i + 1}: malformed hunk header {lines[i]!r}")
            old_count = int(match.group(2) or 1)
            new_count = int(match.group(4) or 1)
            start = int(match.group(1))
            i += 1
            body: list[str] = []
            seen_old = seen_new = 0
            while i < len(lines) and (seen_old < old_count or seen_new < new_count):
                line = lines[i]
                if line == _NO_NEWLINE:
                    i += 1
                    continue
                kind = line[:1] if line else " "
                if kind not in (" ", "-", "+"):
                    raise PatchError(f"line {i + 1}: unexpected {line!r} inside a hunk")
                body.append(kind + line[1:])
                seen_old += kind != "+"
                seen_new += kind != "-"
                i += 1
            if (seen_old, seen_new) != (old_count, new_count):
                raise PatchError(f"hunk at line {start} of {patch.old or patch.new} is truncated")
            while i < len(lines) and lines[i] == _NO_NEWLINE:
                i += 1
            patch.hunks.append((start, body))
        if not patch.hunks:
            raise PatchError(f"patch of {patch.old or patch.new} has no hunks")
        patches.append(patch)
    if not patches:
        raise PatchError("no file changes found (expected '--- a/PATH' / '+++ b/PATH' headers)")
    return patches


def _apply_hunks(path: str, text: str, hunks: list[tuple[int, list[str]]]) -> str:
    lines = text.splitlines()
    out: list[str] = []
    cursor = 0  # lines of the old file consumed so far
    for start, body in hunks:
        # A hunk that only adds to an empty file says "-0,0"; others count from 1.
        at = max(start - 1, 0) if any(line[0] != "+" for line in body) else start
        if at < cursor:
            raise PatchError(f"{path}: hunks overlap or are out of order at line {start}")
        out.extend(lines[cursor:at])
        cursor = at
        for line in body:
            kind, content = line[0], line[1:]
            if kind == "+":
                out.append(content)
                continue
            if cursor >= len(lines) or lines[cursor] != content:
                found = lines[cursor] if cursor < len(lines) else "<end of file>"
                raise PatchError(
                    f"{path}: line {cursor + 1} is {found!r}, the patch expects {content!r}"
                )
            if kind == " ":
                out.append(content)
            cursor += 1
    out.extend(lines[cursor:])
    return "\n".join(out) + "\n" if out else ""


def apply_patch(files: Mapping[str, bytes], diff: str) -> dict[str, str | None]:
    """The files ``diff`` changes: path → new text, or ``None`` for a deleted file.

    Raises :class:`PatchError` naming the first problem: a malformed diff, a file that does
    not exist (or already exists, for a created one), or a line that does not match.
    """
    changes: dict[str, str | None] = {}
    for patch in _parse(diff):
        if patch.old is None:
            assert patch.new is not None
            if patch.new in files or patch.new in changes:
                raise PatchError(f"{patch.new} already exists; the patch creates it")
            changes[patch.new] = _apply_hunks(patch.new, "", patch.hunks)
            continue
        if patch.old in changes:
            raise PatchError(f"{patch.old} is patched twice")
        if patch.old not in files:
            raise PatchError(f"{patch.old} does not exist in the harness")
        try:
            text = files[patch.old].decode()
        except UnicodeDecodeError as error:
            raise PatchError(f"{patch.old} is not UTF-8 text") from error
        result = _apply_hunks(patch.old, text, patch.hunks)
        if patch.new is None:
            if result.strip():
                raise PatchError(f"{patch.old}: a deletion must remove every line")
            changes[patch.old] = None
        elif patch.new != patch.old:
            raise PatchError(f"renames are not supported ({patch.old} → {patch.new})")
        else:
            changes[patch.old] = result
    return changes


def patched(files: Mapping[str, bytes], changes: Mapping[str, str | None]) -> dict[str, bytes]:
    """``files`` with ``changes`` (path → new text, ``None`` to delete) applied."""
    result = dict(files)
    for path, text in changes.items():
        if text is None:
            result.pop(path, None)
        else:
            result[path] = text.encode()
    return result


def creation_diff(files: Mapping[str, bytes]) -> str:
    """A unified diff that creates ``files`` from nothing (how a whole harness is recorded)."""
    parts = []
    for path, content in sorted(files.items()):
        lines = content.decode("utf-8", errors="replace").splitlines()
        body = "".join(f"+{line}\n" for line in lines)
        parts.append(f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}")
    return "".join(parts)
