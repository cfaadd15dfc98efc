"""Layout of a harness commit message: subject, rationale body, trailer block.

``compose_message`` writes::

    <subject: first line of the rationale, at most 72 characters>

    <body>

    Sia-Run: r1
    Sia-Iteration: 3
    Sia-Event: 17

When the rationale's first line fits in the subject, the body is the rest of the rationale
(omitted when there is none), so ``git log`` does not print the first line twice. When the
first line had to be shortened, the body is the whole rationale, so nothing is lost.
"""

from collections.abc import Mapping

from harness_repo.errors import InvalidHarnessInput
from harness_repo.trailers import format_trailers, split_trailer_block

__all__ = ["SUBJECT_MAX", "compose_message", "split_message", "subject_of"]

SUBJECT_MAX = 72
_ELLIPSIS = "…"


def _normalise(rationale: str) -> str:
    return rationale.replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def subject_of(rationale: str) -> str:
    """The subject line for a rationale: its first line, shortened to ``SUBJECT_MAX`` chars."""
    first = _normalise(rationale).split("\n", 1)[0].strip()
    if len(first) <= SUBJECT_MAX:
        return first
    return first[: SUBJECT_MAX - len(_ELLIPSIS)].rstrip() + _ELLIPSIS


def compose_message(rationale: str, trailers: Mapping[str, str]) -> str:
    """Build the full commit message for a rationale and its trailers."""
    text = _normalise(rationale)
    if not text.strip():
        raise InvalidHarnessInput("a harness commit needs a non-empty rationale")
    subject = subject_of(text)
    first, _, rest = text.partition("\n")
    body = rest.strip("\n") if subject == first.strip() else text
    parts = [subject]
    if body.strip():
        parts.append(body)
    block = format_trailers(trailers)
    if block:
        parts.append(block.rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def split_message(message: str) -> tuple[str, str, dict[str, str]]:
    """Split a commit message into ``(subject, body, trailers)``."""
    text, trailers = split_trailer_block(message)
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip("\n"), trailers
