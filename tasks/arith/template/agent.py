"""Arithmetic harness: ask the policy model, extract one integer, return it as the answer.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client (``client.chat.completions.create``).
- ``item``: the public item, ``{"id", "question", "a", "b"}``; it never holds the answer.
- ``config``: the parsed ``harness.json``.

Every behaviour is switched by the config (prompt, few-shot, extraction, retries, voting),
so a harness edit is a small config change that reads well in a diff. The standard library
is all this file needs: it runs in a sandboxed process next to nothing else.

Config keys: ``prompt_format`` (``chat``: system prompt, few-shot turns and
``user_template`` as chat messages; ``completion``: a plain-text pattern to continue, each
few-shot example and then the question rendered with ``completion_template`` and the
reply cut at the end of the line), ``system_prompt``, ``user_template`` and
``completion_template`` (``str.format`` over the item),
``few_shot`` (``[{"item": {...}, "answer": "..."}]``), ``max_tokens``, ``temperature``,
``extraction`` (``last_integer`` | ``first_integer`` | ``first_line``), ``retries`` and
``retry_temperature`` (resample when no integer was found), ``samples`` and
``vote_temperature`` (self-consistency: majority over several samples), ``model``.
"""

import re
from collections import Counter
from typing import Any

__all__ = ["EXTRACTORS", "build_messages", "build_prompt", "extract", "solve"]

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


def build_prompt(item: dict, config: dict) -> str:
    """The plain-text pattern for ``completion`` format: solved examples, then the question.

    An instruct model asked in chat tends to explain instead of answering; the same
    question as the next line of a solved pattern is continued with just the answer.
    """
    template = config.get("completion_template", "{question}")
    lines = [
        f"{template.format_map(shot['item'])} {shot['answer']}"
        for shot in config.get("few_shot", [])
    ]
    return "\n".join([*lines, template.format_map(item)])


def _complete(client, item, config, temperature):
    common = {
        "model": config.get("model", "policy"),
        "max_tokens": int(config.get("max_tokens", 16)),
        "temperature": temperature,
    }
    if config.get("prompt_format", "chat") == "completion":
        response = client.completions.create(
            prompt=build_prompt(item, config), stop=["\n"], **common
        )
        return response.choices[0].text or ""
    response = client.chat.completions.create(messages=build_messages(item, config), **common)
    return response.choices[0].message.content or ""


def _answer(client, item, config, retry):
    samples = max(1, int(config.get("samples", 1)))
    temperature = float(config.get("temperature", 0.0))
    if samples > 1:
        temperature = float(config.get("vote_temperature", 0.7))
    elif retry:
        # Greedy decoding would repeat the failed reply word for word.
        temperature = max(temperature, float(config.get("retry_temperature", 0.7)))
    strategy = config.get("extraction", "last_integer")
    votes = [
        extract(_complete(client, item, config, temperature), strategy) for _ in range(samples)
    ]
    votes = [vote for vote in votes if vote is not None]
    # most_common keeps first-seen order among ties, so the vote is deterministic.
    return Counter(votes).most_common(1)[0][0] if votes else None


def solve(client: Any, item: dict, config: dict) -> str:
    """Solve one episode; the final answer string, ``""`` when no integer was found."""
    if config.get("prompt_format", "chat") not in ("chat", "completion"):
        raise ValueError(
            f"unknown prompt_format {config['prompt_format']!r}; use chat or completion"
        )
    for attempt in range(1 + max(0, int(config.get("retries", 0)))):
        answer = _answer(client, item, config, retry=attempt > 0)
        if answer is not None:
            return answer
    return ""
