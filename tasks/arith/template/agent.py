"""Arithmetic harness: ask the policy model, extract one integer, return it as the answer.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client (``client.chat.completions.create``).
- ``item``: the public item, ``{"id", "question", "a", "b"}``; it never holds the answer.
- ``config``: the parsed ``harness.json``.

Every behaviour is switched by the config (prompt, few-shot, extraction, retries, voting),
so a harness edit is a small config change that reads well in a diff. The standard library
is all this file needs: it runs in a sandboxed process next to nothing else.

Config keys: ``system_prompt``, ``user_template`` (``str.format`` over the item),
``few_shot`` (``[{"item": {...}, "answer": "..."}]``), ``max_tokens``, ``temperature``,
``extraction`` (``last_integer`` | ``first_integer`` | ``first_line``), ``retries`` and
``retry_temperature`` (resample when no integer was found), ``samples`` and
``vote_temperature`` (self-consistency: majority over several samples), ``model``.
"""

import re
from collections import Counter
from typing import Any

__all__ = ["EXTRACTORS", "build_messages", "extract", "solve"]

# A minus sign counts only when it is not an operator between two numbers ("47-38").
_INTEGER = re.compile(r"(?<![0-9])-?[0-9]+")
_MARKER = re.compile(r"(?:=|answer\s*is|answer\s*:)\s*(-?[0-9]+)", re.IGNORECASE)


def _last_integer(text):
    found = _INTEGER.findall(text)
    return found[-1] if found else None


def _first_integer(text):
    found = _INTEGER.search(text)
    return found.group() if found else None


def _first_line(text):
    # Small models often answer, then carry on with a new made-up question; the first
    # line holds the answer, and an "= N" or "answer is N" in it marks the result.
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    marked = _MARKER.findall(line)
    return marked[-1] if marked else _last_integer(line)


EXTRACTORS = {
    "last_integer": _last_integer,
    "first_integer": _first_integer,
    "first_line": _first_line,
}


def extract(text: str, strategy: str) -> str | None:
    """The integer in ``text`` chosen by ``strategy``, normalised (``"085"`` → ``"85"``)."""
    if strategy not in EXTRACTORS:
        raise ValueError(f"unknown extraction {strategy!r}; known: {', '.join(EXTRACTORS)}")
    found = EXTRACTORS[strategy](text or "")
    return None if found is None else str(int(found))


def build_messages(item: dict, config: dict) -> list[dict[str, str]]:
    template = config.get("user_template", "{question}")
    messages = []
    if config.get("system_prompt"):
        messages.append({"role": "system", "content": config["system_prompt"]})
    for shot in config.get("few_shot", []):
        messages.append({"role": "user", "content": template.format_map(shot["item"])})
        messages.append({"role": "assistant", "content": str(shot["answer"])})
    messages.append({"role": "user", "content": template.format_map(item)})
    return messages


def _complete(client, messages, config, temperature):
    response = client.chat.completions.create(
        model=config.get("model", "policy"),
        messages=messages,
        max_tokens=int(config.get("max_tokens", 16)),
        temperature=temperature,
    )
    return response.choices[0].message.content or ""


def _answer(client, messages, config, retry):
    samples = max(1, int(config.get("samples", 1)))
    temperature = float(config.get("temperature", 0.0))
    if samples > 1:
        temperature = float(config.get("vote_temperature", 0.7))
    elif retry:
        # Greedy decoding would repeat the failed reply word for word.
        temperature = max(temperature, float(config.get("retry_temperature", 0.7)))
    strategy = config.get("extraction", "last_integer")
    votes = [
        extract(_complete(client, messages, config, temperature), strategy) for _ in range(samples)
    ]
    votes = [vote for vote in votes if vote is not None]
    # most_common keeps first-seen order among ties, so the vote is deterministic.
    return Counter(votes).most_common(1)[0][0] if votes else None


def solve(client: Any, item: dict, config: dict) -> str:
    """Solve one episode; the final answer string, ``""`` when no integer was found."""
    messages = build_messages(item, config)
    for attempt in range(1 + max(0, int(config.get("retries", 0)))):
        answer = _answer(client, messages, config, retry=attempt > 0)
        if answer is not None:
            return answer
    return ""
