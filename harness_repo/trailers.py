"""Git trailers: the ``Key: value`` lines in the last paragraph of a commit message.

SIA stamps every harness commit with trailers (``Sia-Run``, ``Sia-Iteration``,
``Sia-Event``) so that ``git log`` alone says which run, iteration and ledger event a commit
belongs to, and so that crash reconciliation can find a commit by the event that records it.

Parsing follows git's rules closely enough for messages SIA writes and for ordinary
hand-written ones: the trailer block is the last paragraph, never the first (that is the
subject), and every line in it is either ``Key: value`` or a continuation line that starts
with whitespace and folds into the previous value. A paragraph with any other line is body
text, not trailers.
"""

import re
from collections.abc import Mapping

from harness_repo.errors import InvalidHarnessInput

__all__ = [
    "format_trailers",
    "parse_trailers",
    "split_trailer_block",
    "validate_trailers",
]

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(.*)")


def validate_trailers(trailers: Mapping[str, str]) -> None:
    """Raise ``InvalidHarnessInput`` unless every pair survives a format/parse round trip."""
    for key, value in trailers.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidHarnessInput(
                f"trailer key {key!r} must be letters, digits and dashes, starting with "
                "a letter or digit"
            )
        if not isinstance(value, str):
            raise InvalidHarnessInput(
                f"trailer {key} must have a str value, got {type(value).__name__}"
            )
        if not value or value != value.strip() or "\n" in value or "\r" in value:
            raise InvalidHarnessInput(
                f"trailer {key} value {value!r} must be one non-empty line without "
                "surrounding whitespace"
            )


def format_trailers(trailers: Mapping[str, str]) -> str:
    """Render trailers as ``Key: value`` lines, in the mapping's order, newline-terminated.

    Returns ``""`` for an empty mapping.
    """
    validate_trailers(trailers)
    return "".join(f"{key}: {value}\n" for key, value in trailers.items())


def split_trailer_block(message: str) -> tuple[str, dict[str, str]]:
    """Split a message into the text before its trailer block and the parsed trailers.

    The text keeps everything up to the trailer block, with trailing blank lines removed.
    A message without a trailer block comes back unchanged (minus trailing blank lines)
    with an empty dict. A key that occurs more than once keeps its last value.
    """
    text = message.replace("\r\n", "\n").rstrip("\n")
    lines = text.split("\n")
    start = len(lines)
    while start > 0 and lines[start - 1].strip():
        start -= 1
    # The first paragraph is the subject; git never reads trailers from it.
    if start == 0:
        return text, {}
    parsed = _parse_block(lines[start:])
    if parsed is None:
        return text, {}
    return "\n".join(lines[:start]).rstrip("\n"), parsed


def parse_trailers(message: str) -> dict[str, str]:
    """Return the trailers of a commit message as a dict (empty if it has none)."""
    return split_trailer_block(message)[1]


def _parse_block(lines: list[str]) -> dict[str, str] | None:
    pairs: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not pairs:
                return None
            pairs[-1][1] = f"{pairs[-1][1]} {line.strip()}".strip()
            continue
        match = _LINE.fullmatch(line.rstrip())
        if match is None:
            return None
        pairs.append([match.group(1), match.group(2).strip()])
    return {key: value for key, value in pairs}
