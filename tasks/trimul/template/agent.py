"""Kernel-writing harness: show the model the reference, extract the code it writes.

Entry point: ``solve(client, item, config) -> str``.

- ``client``: an OpenAI-compatible client (``client.chat.completions.create``).
- ``item``: the public item, ``{"id", "question", "shape", "reference_code"}``; ``shape``
  holds ``batch``, ``seq_len``, ``dim``, ``hidden``, ``masked`` and ``distribution``.
- ``config``: the parsed ``harness.json``.

The answer is Python source defining ``custom_kernel(data)``; the task runs and times it.
Every behaviour is switched by the config, so a harness edit is a small config change that
reads well in a diff. The standard library is all this file needs.

Config keys: ``system_prompt``, ``user_template`` (``str.format`` over the item, e.g.
``{question}``, ``{reference_code}``, ``{shape[seq_len]}``), ``max_tokens``,
``temperature``, ``retries`` and ``retry_temperature`` (resample when no code came back),
``model``, ``extraction`` (``fenced_block``: the ```python block that names
``custom_kernel``, else the first one, an unterminated block up to the end of the reply;
``raw``: the whole reply) and ``fallback_to_reference`` (when nothing was extracted,
answer the reference itself: a correct answer at about the reference's speed, reward
~0.5, instead of 0).
"""

import re
from typing import Any

__all__ = ["ENTRY", "EXTRACTORS", "build_messages", "extract", "reference_answer", "solve"]

ENTRY = "custom_kernel"
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3"}


def _fenced_block(text):
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in _CODE_LANGS]
    named = [block for block in blocks if ENTRY in block]
    return named[0] if named else None


def _raw(text):
    return text if ENTRY in text else None


EXTRACTORS = {"fenced_block": _fenced_block, "raw": _raw}


def extract(text: str, strategy: str) -> str | None:
    """The code in a reply chosen by ``strategy``; ``None`` when none names custom_kernel."""
    if strategy not in EXTRACTORS:
        raise ValueError(f"unknown extraction {strategy!r}; known: {', '.join(EXTRACTORS)}")
    code = EXTRACTORS[strategy](text or "")
    return code.strip() + "\n" if code and code.strip() else None


def reference_answer(item: dict) -> str:
    """The reference source, made an answer: it defines reference_kernel, so alias it."""
    return f"{item['reference_code'].rstrip()}\n\n\n{ENTRY} = reference_kernel\n"


def build_messages(item: dict, config: dict) -> list[dict[str, str]]:
    messages = []
    if config.get("system_prompt"):
        messages.append({"role": "system", "content": config["system_prompt"]})
    template = config.get("user_template", "{question}")
    messages.append({"role": "user", "content": template.format_map(item)})
    return messages


def _complete(client, item, config, temperature):
    response = client.chat.completions.create(
        model=config.get("model", "policy"),
        messages=build_messages(item, config),
        max_tokens=int(config.get("max_tokens", 512)),
        temperature=temperature,
    )
    return response.choices[0].message.content or ""


def solve(client: Any, item: dict, config: dict) -> str:
    """Solve one episode; the code to run, or ``""`` when none came back (and no fallback)."""
    strategy = config.get("extraction", "fenced_block")
    temperature = float(config.get("temperature", 0.0))
    for attempt in range(1 + max(0, int(config.get("retries", 0)))):
        if attempt:
            # Greedy decoding would repeat the failed reply word for word.
            temperature = max(temperature, float(config.get("retry_temperature", 0.7)))
        code = extract(_complete(client, item, config, temperature), strategy)
        if code is not None:
            return code
    return reference_answer(item) if config.get("fallback_to_reference", False) else ""
