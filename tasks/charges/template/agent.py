"""Charge-prediction harness: ask the policy model, read one charge from the reply.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client (``client.chat.completions.create``).
- ``item``: the public item, ``{"id", "question"}``; it never holds the answer.
- ``config``: the parsed ``harness.json``.

Config keys: ``prompt_format`` (``chat``, or ``completion``: solved cases as a plain-text
pattern continued by the model, each rendered with ``completion_template``, the reply cut
at the end of the line), ``system_prompt``, ``user_template``, ``labels`` (the public list
of charges) and ``show_labels`` (list them in the prompt), ``few_shot``
(``[{"item": {...}, "answer": "..."}]``), ``max_tokens``, ``temperature``, ``extraction``
(``first_line``: the reply's first line as written; ``closest_label``: the label the reply
names, or failing that the label closest in spelling), ``retries`` and
``retry_temperature`` (resample when nothing was extracted), ``samples`` and
``vote_temperature`` (majority over several samples), ``model``.
"""

import difflib
import re
from collections import Counter
from typing import Any

__all__ = ["EXTRACTORS", "build_messages", "build_prompt", "extract", "solve"]

_NOISE = re.compile(r"^(?:the\s+)?(?:charge|crime|answer)\s*(?:is|:)\s*", re.IGNORECASE)


def _first_line(text, labels):
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _NOISE.sub("", line.strip()).strip(" .\"'`*")
    return line or None


def _closest_label(text, labels):
    lowered = text.lower()
    named = [(lowered.find(label.lower()), label) for label in labels if label.lower() in lowered]
    if named:
        # Longest first among labels found at the same place ("credit card fraud" > "fraud").
        return min(named, key=lambda found: (found[0], -len(found[1])))[1]
    line = _first_line(text, labels) or ""
    close = difflib.get_close_matches(line.lower(), [label.lower() for label in labels], 1, 0.6)
    return next((label for label in labels if close and label.lower() == close[0]), None)


EXTRACTORS = {"first_line": _first_line, "closest_label": _closest_label}


def extract(text, strategy, labels):
    """The charge in ``text`` chosen by ``strategy``; ``None`` when there is none."""
    if strategy not in EXTRACTORS:
        raise ValueError(f"unknown extraction {strategy!r}; known: {', '.join(EXTRACTORS)}")
    return EXTRACTORS[strategy](text or "", list(labels))


def _system(config):
    prompt = config.get("system_prompt", "")
    if config.get("show_labels") and config.get("labels"):
        prompt = f"{prompt} Charges: {', '.join(config['labels'])}.".strip()
    return prompt


def build_messages(item: dict, config: dict) -> list[dict[str, str]]:
    template = config.get("user_template", "{question}")
    messages = []
    system = _system(config)
    if system:
        messages.append({"role": "system", "content": system})
    for shot in config.get("few_shot", []):
        messages.append({"role": "user", "content": template.format_map(shot["item"])})
        messages.append({"role": "assistant", "content": str(shot["answer"])})
    messages.append({"role": "user", "content": template.format_map(item)})
    return messages


def build_prompt(item: dict, config: dict) -> str:
    template = config.get("completion_template", "{question}")
    head = []
    if config.get("show_labels") and config.get("labels"):
        head.append(f"Charges: {', '.join(config['labels'])}.")
    shots = [
        f"{template.format_map(shot['item'])} {shot['answer']}"
        for shot in config.get("few_shot", [])
    ]
    return "\n".join([*head, *shots, template.format_map(item)])


def _complete(client, item, config, temperature):
    common = {
        "model": config.get("model", "policy"),
        "max_tokens": int(config.get("max_tokens", 12)),
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
        temperature = max(temperature, float(config.get("retry_temperature", 0.7)))
    strategy = config.get("extraction", "first_line")
    labels = config.get("labels", [])
    votes = [
        extract(_complete(client, item, config, temperature), strategy, labels)
        for _ in range(samples)
    ]
    votes = [vote for vote in votes if vote is not None]
    return Counter(votes).most_common(1)[0][0] if votes else None


def solve(client: Any, item: dict, config: dict) -> str:
    """Solve one episode; the charge, or ``""`` when none could be read from the reply."""
    if config.get("prompt_format", "chat") not in ("chat", "completion"):
        raise ValueError(
            f"unknown prompt_format {config['prompt_format']!r}; use chat or completion"
        )
    for attempt in range(1 + max(0, int(config.get("retries", 0)))):
        answer = _answer(client, item, config, retry=attempt > 0)
        if answer is not None:
            return answer
    return ""
