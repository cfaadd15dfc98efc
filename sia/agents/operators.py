"""Harness edit operators: small, deterministic rewrites of a harness's ``harness.json``.

The harness's ``agent.py`` implements every behaviour (prompting, few-shot, extraction,
retries, voting) behind config keys, so each operator is a config change that reads well in
a diff and cannot break the code. An operator applies only when its change is not in the
harness yet and when ``agent.py`` reads the config keys it sets (a harness written by another
Meta Agent may not). ``apply`` is a pure function of the files and the operator's fields.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sia.agents.errors import AgentError

__all__ = [
    "ANSWER_FORMATS",
    "CONFIG_FILE",
    "AnswerFormat",
    "ClosestLabel",
    "CompletionPrompt",
    "FewShot",
    "HarnessEdit",
    "Operator",
    "ReduceSampling",
    "ReselectFewShot",
    "RetryOnParseFailure",
    "RewordInstruction",
    "SelfConsistency",
    "ShowLabels",
    "SwitchExtraction",
    "dump_config",
    "read_config",
]

CONFIG_FILE = "harness.json"
AGENT_FILE = "agent.py"

#: Answer-format instructions; the first is added by :class:`AnswerFormat`, the others are the
#: wordings :class:`RewordInstruction` cycles through. Short, since every token of the prompt
#: costs a 135M model accuracy.
ANSWER_FORMATS: tuple[str, ...] = (
    "Reply with only the final answer.",
    "Give just the answer, no explanation.",
    "Answer with the result alone.",
    "Output only the final answer, nothing else.",
)

Files = Mapping[str, bytes]


@dataclass(frozen=True)
class HarnessEdit:
    """One operator's change: the files it rewrites (path → full new text)."""

    operator: str
    summary: str
    files: dict[str, str]
    effect: str = ""  # what the change should do, for the Decision's expected effect

    def to_payload(self) -> dict[str, Any]:
        """The shape ``DecisionMade.edit`` stores."""
        return {"summary": self.summary, "operator": self.operator, "files": dict(self.files)}


def read_config(files: Files) -> dict[str, Any] | None:
    """The harness config, or ``None`` when the harness has no readable ``harness.json``."""
    raw = files.get(CONFIG_FILE)
    if raw is None:
        return None
    try:
        config = json.loads(raw)
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def dump_config(config: Mapping[str, Any]) -> str:
    """Config text in the template's layout, so that a diff shows only the changed keys."""
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def _reads(files: Files, words: tuple[str, ...]) -> bool:
    source = files.get(AGENT_FILE, b"").decode("utf-8", errors="replace")
    return all(f'"{w}"' in source or f"'{w}'" in source for w in words)


class Operator(abc.ABC):
    """A named harness rewrite. Subclasses are frozen dataclasses holding their parameters."""

    name: ClassVar[str]
    #: What the change should do, in words the Decision's ``expected_effect`` reuses.
    effect: ClassVar[str]
    #: Strings ``agent.py`` must contain (quoted) for the change to take effect.
    reads: ClassVar[tuple[str, ...]]

    def applies(self, files: Files) -> bool:
        config = read_config(files)
        return config is not None and _reads(files, self.reads) and self._applies(config)

    def apply(self, files: Files) -> HarnessEdit:
        """The edit; raises :class:`AgentError` when the operator does not apply."""
        if not self.applies(files):
            raise AgentError(f"edit operator {self.name} does not apply to this harness")
        config = read_config(files)
        assert config is not None  # applies() checked it
        new = self._rewrite(dict(config))
        return HarnessEdit(
            self.name, self._summary(config, new), {CONFIG_FILE: dump_config(new)}, self.effect
        )

    @abc.abstractmethod
    def _applies(self, config: dict[str, Any]) -> bool: ...

    @abc.abstractmethod
    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str: ...


def _completion_format(config: dict[str, Any]) -> bool:
    # A completion-format harness sends no system prompt, so instructions there do nothing.
    return config.get("prompt_format") == "completion"


def _instruction_in(prompt: str, instructions: tuple[str, ...]) -> str | None:
    return next((text for text in instructions if text in prompt), None)


def _with_instruction(prompt: str, instruction: str, instructions: tuple[str, ...]) -> str:
    for known in instructions:
        prompt = prompt.replace(known, "")
    # Only the gap a removed sentence leaves is closed; line breaks stay as written.
    prompt = re.sub(r"[ \t]{2,}", " ", prompt).strip()
    return f"{prompt} {instruction}" if prompt else instruction


@dataclass(frozen=True)
class AnswerFormat(Operator):
    """Append an answer-format instruction to the system prompt."""

    name: ClassVar[str] = "answer-format"
    effect: ClassVar[str] = "fewer replies padded with prose, so fewer unparsable answers"
    reads: ClassVar[tuple[str, ...]] = ("system_prompt",)
    instructions: tuple[str, ...] = ANSWER_FORMATS

    def _applies(self, config: dict[str, Any]) -> bool:
        if _completion_format(config):
            return False
        return _instruction_in(str(config.get("system_prompt", "")), self.instructions) is None

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        prompt = str(config.get("system_prompt", ""))
        config["system_prompt"] = _with_instruction(prompt, self.instructions[0], self.instructions)
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Ask for the answer alone: add {self.instructions[0]!r} to the system prompt"


@dataclass(frozen=True)
class RewordInstruction(Operator):
    """Replace the answer-format instruction with another wording (always applicable).

    ``round`` counts the instruction edits made earlier in the run, so a rejected wording is
    not proposed again before every other one has been tried.
    """

    name: ClassVar[str] = "reword-instruction"
    effect: ClassVar[str] = "a wording of the answer-format instruction the model follows better"
    reads: ClassVar[tuple[str, ...]] = ("system_prompt",)
    instructions: tuple[str, ...] = ANSWER_FORMATS
    round: int = 0

    def _applies(self, config: dict[str, Any]) -> bool:
        return len(self.instructions) >= 2 and not _completion_format(config)

    def _choice(self, prompt: str) -> str:
        current = _instruction_in(prompt, self.instructions)
        others = [text for text in self.instructions if text != current]
        return others[self.round % len(others)]

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        prompt = str(config.get("system_prompt", ""))
        config["system_prompt"] = _with_instruction(prompt, self._choice(prompt), self.instructions)
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        choice = self._choice(str(old.get("system_prompt", "")))
        return f"Reword the answer-format instruction: {choice!r}"


@dataclass(frozen=True)
class FewShot(Operator):
    """Put ``k`` worked train examples in front of the question."""

    name: ClassVar[str] = "few-shot"
    effect: ClassVar[str] = "replies that copy the demonstrated format and method"
    reads: ClassVar[tuple[str, ...]] = ("few_shot",)
    examples: tuple[dict[str, Any], ...] = ()
    k: int = 2

    def _applies(self, config: dict[str, Any]) -> bool:
        return bool(self.examples) and self.k > 0 and not config.get("few_shot")

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["few_shot"] = [dict(example) for example in self.examples[: self.k]]
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Show {len(new['few_shot'])} worked train examples before the question"


@dataclass(frozen=True)
class ReselectFewShot(Operator):
    """Replace the few-shot examples with the next ``k`` from the pool of train examples.

    Which examples a small model is shown changes its accuracy by several points, and
    keep-best evaluation turns trying another set into a search. ``round`` counts earlier
    reselections in the run, so each proposes a set not tried before (cycling the pool).
    """

    name: ClassVar[str] = "reselect-few-shot"
    effect: ClassVar[str] = "demonstrations the model generalises from better"
    reads: ClassVar[tuple[str, ...]] = ("few_shot",)
    examples: tuple[dict[str, Any], ...] = ()
    k: int = 2
    round: int = 0

    def _choice(self) -> list[dict[str, Any]]:
        sets = len(self.examples) // self.k
        start = ((self.round + 1) % sets) * self.k  # set 0 is what FewShot shows first
        return [dict(example) for example in self.examples[start : start + self.k]]

    def _applies(self, config: dict[str, Any]) -> bool:
        if self.k <= 0 or len(self.examples) < 2 * self.k or not config.get("few_shot"):
            return False
        return config.get("few_shot") != self._choice()

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["few_shot"] = self._choice()
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        sets = len(self.examples) // self.k
        return f"Show another {self.k} train examples (set {(self.round + 1) % sets + 1}/{sets})"


@dataclass(frozen=True)
class CompletionPrompt(Operator):
    """Ask in ``completion`` format: solved examples as lines of a pattern, then the question.

    An instruct model asked in chat explains instead of answering; the same question as
    the next line of a solved pattern ("12 + 30 = 42") is continued with just the answer.
    Needs the harness's ``completion_template`` (the task template declares its pattern);
    brings ``k`` train examples along when the harness shows none, since a pattern of one
    line teaches nothing.
    """

    name: ClassVar[str] = "completion-prompt"
    effect: ClassVar[str] = (
        "terse answers: the model continues a solved pattern instead of chatting"
    )
    reads: ClassVar[tuple[str, ...]] = ("prompt_format", "completion_template", "few_shot")
    examples: tuple[dict[str, Any], ...] = ()
    k: int = 2

    def _applies(self, config: dict[str, Any]) -> bool:
        has_examples = bool(config.get("few_shot")) or (bool(self.examples) and self.k > 0)
        return (
            not _completion_format(config)
            and bool(config.get("completion_template"))
            and has_examples
        )

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["prompt_format"] = "completion"
        if not config.get("few_shot"):
            config["few_shot"] = [dict(example) for example in self.examples[: self.k]]
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return (
            f"Ask as a plain-text pattern ({new['completion_template']!r}) after "
            f"{len(new['few_shot'])} solved train examples, instead of a chat question"
        )


@dataclass(frozen=True)
class SwitchExtraction(Operator):
    """Extract the answer with ``target`` (default: the marked/last integer of the first line).

    A small model often answers and then keeps generating a made-up follow-up question; the
    last integer of the whole reply then belongs to the follow-up, not to the answer.
    """

    name: ClassVar[str] = "switch-extraction"
    effect: ClassVar[str] = "answers read from the reply's first line, not from trailing text"
    reads: ClassVar[tuple[str, ...]] = ("extraction",)
    target: str = "first_line"

    def applies(self, files: Files) -> bool:
        return _reads(files, (self.target,)) and super().applies(files)

    def _applies(self, config: dict[str, Any]) -> bool:
        return config.get("extraction") != self.target

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["extraction"] = self.target
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Switch answer extraction from {old.get('extraction')} to {self.target}"


@dataclass(frozen=True)
class ClosestLabel(SwitchExtraction):
    """Read the answer as the label the reply names, or the label closest in spelling.

    For classification harnesses (they declare ``labels``): a small model answers with a
    near miss ("theft of property", "Fraud."), which scores 0 unless mapped to a label.
    """

    name: ClassVar[str] = "closest-label"
    effect: ClassVar[str] = "answers outside the label set mapped to the nearest label"
    reads: ClassVar[tuple[str, ...]] = ("extraction", "labels")
    target: str = "closest_label"


@dataclass(frozen=True)
class ShowLabels(Operator):
    """List the task's labels in the prompt, so the model picks one instead of inventing."""

    name: ClassVar[str] = "label-list"
    effect: ClassVar[str] = "answers drawn from the label set, not made up"
    reads: ClassVar[tuple[str, ...]] = ("labels", "show_labels")

    def _applies(self, config: dict[str, Any]) -> bool:
        return bool(config.get("labels")) and not config.get("show_labels")

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["show_labels"] = True
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"List the {len(new['labels'])} possible labels in the prompt"


@dataclass(frozen=True)
class RetryOnParseFailure(Operator):
    """Resample (at ``temperature``) up to ``retries`` times when no answer was extracted."""

    name: ClassVar[str] = "retry-on-parse-failure"
    effect: ClassVar[str] = "a second chance for episodes whose reply held no answer"
    reads: ClassVar[tuple[str, ...]] = ("retries", "retry_temperature")
    retries: int = 2
    temperature: float = 0.7

    def _applies(self, config: dict[str, Any]) -> bool:
        return int(config.get("retries", 0)) <= 0 and self.retries > 0

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["retries"] = self.retries
        config["retry_temperature"] = self.temperature
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Retry up to {self.retries} times at temperature {self.temperature} on no answer"


@dataclass(frozen=True)
class SelfConsistency(Operator):
    """Sample ``samples`` replies at ``temperature`` and return the majority answer."""

    name: ClassVar[str] = "self-consistency"
    effect: ClassVar[str] = "fewer one-off slips: the majority over several samples is kept"
    reads: ClassVar[tuple[str, ...]] = ("samples", "vote_temperature")
    samples: int = 5
    temperature: float = 0.7

    def _applies(self, config: dict[str, Any]) -> bool:
        return int(config.get("samples", 1)) <= 1 and self.samples > 1

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["samples"] = self.samples
        config["vote_temperature"] = self.temperature
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return f"Vote over {self.samples} samples at temperature {self.temperature}"


@dataclass(frozen=True)
class ReduceSampling(Operator):
    """One model call per episode: no voting, no retries (for harnesses that time out)."""

    name: ClassVar[str] = "reduce-sampling"
    effect: ClassVar[str] = "episodes that finish within their time limit"
    reads: ClassVar[tuple[str, ...]] = ("samples", "retries")

    def _applies(self, config: dict[str, Any]) -> bool:
        return int(config.get("samples", 1)) > 1 or int(config.get("retries", 0)) > 0

    def _rewrite(self, config: dict[str, Any]) -> dict[str, Any]:
        config["samples"] = 1
        config["retries"] = 0
        return config

    def _summary(self, old: dict[str, Any], new: dict[str, Any]) -> str:
        return (
            f"Cut model calls per episode to one (samples {old.get('samples', 1)} → 1, "
            f"retries {old.get('retries', 0)} → 0)"
        )
