"""The offline agents: deterministic, rule-based, no network — SIA's embedded default.

``TemplateMetaAgent`` starts from the task's bundled harness template.
``RuleFeedbackAgent`` reads a rollout's diagnostics and the run's history, scores the two
levers with the table in :mod:`sia.agents.rules`, and either proposes one harness edit (an
operator from :mod:`sia.agents.operators`) or names the RL algorithm to train with. The same
context always yields the same decision, so replaying a run reproduces its decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from sia.agents.diagnostics import Diagnostics, Thresholds, diagnose
from sia.agents.errors import AgentError
from sia.agents.operators import (
    ANSWER_FORMATS,
    AnswerFormat,
    ClosestLabel,
    CompletionPrompt,
    FewShot,
    HarnessEdit,
    Operator,
    ReduceSampling,
    ReselectFewShot,
    RetryOnParseFailure,
    RewordInstruction,
    SelfConsistency,
    ShowLabels,
    SwitchExtraction,
    read_config,
)
from sia.agents.operators_chess import LegalMoveExtraction, LegalMoves, MateCheck
from sia.agents.operators_denoise import DENOISE_OPERATORS
from sia.agents.rules import ALGORITHM_RULES, LEVER_RULES, AlgorithmRule, Evidence, LeverRule
from sia.ports import FeedbackContext, HarnessDraft, TaskSource
from statemachine.events import DecisionMade
from statemachine.state import IterationRecord
from tasks.base import Task

__all__ = ["LEVERS", "RuleFeedbackAgent", "TemplateMetaAgent"]

LEVERS: tuple[str, ...] = ("edit", "train")
#: Operators that change the answer-format sentence; their count picks the next wording.
_INSTRUCTION_OPERATORS = frozenset({AnswerFormat.name, RewordInstruction.name})
#: Operators that cure one failure mode are proposed only when the rollout shows it; on a
#: rollout without it they would spend an iteration on a change that cannot move the score.
_SYMPTOMS: dict[str, Callable[[Diagnostics], bool]] = {
    SwitchExtraction.name: lambda d: d.parse_failure_rate > 0 or (d.rambling_ratio or 0) >= 0.5,
    ClosestLabel.name: lambda d: (d.invalid_label_rate or 0) > 0 or d.parse_failure_rate > 0,
    RetryOnParseFailure.name: lambda d: d.parse_failure_rate > 0,
}


def _relevant(name: str, diag: Diagnostics) -> bool:
    symptom = _SYMPTOMS.get(name)
    return symptom is None or symptom(diag)


class TemplateMetaAgent:
    """Writes the initial harness: the task's own template, unchanged."""

    name = "offline-meta"

    def initial_harness(self, task: TaskSource, *, run_id: str = "") -> HarnessDraft:
        files = dict(task.harness_template())
        missing = [path for path in ("agent.py", "harness.json") if path not in files]
        if missing:
            raise AgentError(f"task {task.id} has no harness template ({', '.join(missing)})")
        config = read_config(files)
        settings = ", ".join(
            f"{key}={config[key]!r}"
            for key in ("extraction", "retries", "max_tokens", "temperature")
            if config and key in config
        )
        rationale = (
            f"Initial harness for {task.id}: the task's bundled template\n\n"
            f"Files: {', '.join(sorted(files))}. Settings: {settings or 'none readable'}. "
            "The offline Meta Agent starts every run from the template the task ships, so the "
            "baseline score measures the task's reference harness."
        )
        return HarnessDraft(files=files, rationale=rationale)


class RuleFeedbackAgent:
    """Chooses edit or train from named rules; see :mod:`sia.agents.rules` for the table.

    ``train_examples`` are few-shot demonstrations from the train split, each
    ``{"item": <public item>, "answer": str}`` (:meth:`tasks.base.Task.demonstrations`):
    the first ``few_shot_k`` are shown first, the rest are the pool later reselections
    draw from.
    """

    name = "offline-feedback"

    def __init__(
        self,
        *,
        train_examples: Iterable[Mapping[str, Any]] = (),
        thresholds: Thresholds | None = None,
        few_shot_k: int = 2,
        vote_samples: int = 5,
        instructions: Sequence[str] = ANSWER_FORMATS,
    ) -> None:
        if len(instructions) < 2:
            raise AgentError("RuleFeedbackAgent needs at least two answer-format wordings")
        self.thresholds = thresholds or Thresholds()
        self.instructions = tuple(instructions)
        self.examples = tuple(dict(example) for example in train_examples)
        self.few_shot_k = few_shot_k
        # Default order: cheap prompt fixes first, then the ones that cost model calls.
        self.operators: tuple[Operator, ...] = (
            ShowLabels(),
            LegalMoves(),
            AnswerFormat(self.instructions),
            ClosestLabel(),
            LegalMoveExtraction(),
            SwitchExtraction(),
            MateCheck(),
            CompletionPrompt(self.examples, k=few_shot_k),
            FewShot(self.examples, k=few_shot_k),
            RetryOnParseFailure(),
            SelfConsistency(samples=vote_samples),
            *DENOISE_OPERATORS,
        )
        # Remedies that only a rule asks for: they undo improvements to buy speed.
        self.remedies: tuple[Operator, ...] = (ReduceSampling(),)

    @classmethod
    def for_task(
        cls, task: Task, *, few_shot_k: int = 2, pool: int = 8, **options: Any
    ) -> RuleFeedbackAgent:
        """An agent whose few-shot operators draw ``pool`` sets of ``task``'s train items."""
        examples = task.demonstrations(few_shot_k * pool)
        return cls(train_examples=examples, few_shot_k=few_shot_k, **options)

    def decide(self, context: FeedbackContext) -> DecisionMade:
        allowed = [lever for lever in LEVERS if lever in context.levers]
        if not allowed:
            raise AgentError(f"no lever to choose from: {sorted(context.levers)}")
        files = context.harness
        diag = diagnose(context.rollout, context.history, read_config(files), self.thresholds)
        untried = tuple(
            op.name
            for op in self.operators
            if op.name not in diag.edits_tried and _relevant(op.name, diag) and op.applies(files)
        )
        evidence = Evidence(diag, self.thresholds, untried)
        fired = [rule for rule in LEVER_RULES if rule.when(evidence)]
        scores = {lever: sum(_weight(rule, lever) for rule in fired) for lever in LEVERS}
        edit = self._edit(files, diag, fired) if "edit" in allowed else None
        if edit is None and "edit" in allowed:
            if allowed == ["edit"]:
                raise AgentError(
                    "the offline feedback agent edits harnesses through harness.json "
                    "(with a system_prompt), and this harness has none"
                )
            allowed = ["train"]
        # Ties go to the edit: it is cheaper, and a rejected edit costs one evaluation.
        lever = max(allowed, key=lambda name: (scores[name], name == "edit"))
        algorithm = _algorithm(evidence)
        chosen = [rule for rule in fired if _weight(rule, lever) > 0]
        rules = [rule.name for rule in fired]
        if lever == "train":
            rules.append(algorithm.name)
        return DecisionMade(
            iteration=context.iteration,
            lever=lever,
            agent=self.name,
            rationale=_rationale(lever, edit, algorithm, chosen, evidence, scores, allowed),
            diagnostics={
                **diag.to_dict(),
                "scores": scores,
                "untried_operators": list(untried),
                "thresholds": asdict(self.thresholds),
            },
            alternatives=tuple(
                _alternative(name, scores, fired, evidence, allowed, edit, algorithm)
                for name in LEVERS
            ),
            rules=tuple(rules),
            algorithm=algorithm.algorithm if lever == "train" else None,
            algorithm_reason=algorithm.why(evidence) if lever == "train" else "",
            expected_effect=_expected(lever, edit, algorithm, diag, context.history),
            edit=edit.to_payload() if lever == "edit" and edit else None,
        )

    def _edit(
        self, files: Mapping[str, bytes], diag: Diagnostics, fired: Sequence[LeverRule]
    ) -> HarnessEdit | None:
        """The first applicable, untried operator: the rules' picks, then the default order.

        When none is left, the answer-format instruction is reworded (chat format) or
        another set of few-shot examples is shown, so mode ``h`` always has an edit to make.
        """
        by_name = {op.name: op for op in (*self.operators, *self.remedies)}
        wanted = [name for rule in fired if rule.edit > 0 for name in rule.operators]
        default = [op.name for op in self.operators if _relevant(op.name, diag)]
        for name in dict.fromkeys([*wanted, *default]):
            op = by_name.get(name)
            if op is not None and name not in diag.edits_tried and op.applies(files):
                return op.apply(files)
        rounds = sum(1 for name in diag.edits_tried if name in _INSTRUCTION_OPERATORS)
        reword = RewordInstruction(self.instructions, round=rounds)
        if reword.applies(files):
            return reword.apply(files)
        rounds = diag.edits_tried.count(ReselectFewShot.name)
        reselect = ReselectFewShot(self.examples, k=self.few_shot_k, round=rounds)
        return reselect.apply(files) if reselect.applies(files) else None


def _weight(rule: LeverRule, lever: str) -> float:
    return rule.edit if lever == "edit" else rule.train


def _algorithm(evidence: Evidence) -> AlgorithmRule:
    return next(rule for rule in ALGORITHM_RULES if rule.when(evidence))


def _best_score(history: Sequence[IterationRecord]) -> float | None:
    scores = [rec.score for rec in history if rec.accepted and rec.score is not None]
    return max(scores) if scores else None


def _rationale(
    lever: str,
    edit: HarnessEdit | None,
    algorithm: AlgorithmRule,
    chosen: Sequence[LeverRule],
    evidence: Evidence,
    scores: Mapping[str, float],
    allowed: Sequence[str],
) -> str:
    if lever == "edit" and edit is not None:
        head = f"Edit the harness ({edit.operator})"
    else:
        head = f"Train an adapter ({algorithm.algorithm})"
    reasons = [f"{rule.name}: {rule.why(evidence)}" for rule in chosen]
    if len(allowed) == 1:
        reasons.append(f"only {lever} is possible in this run")
    if not reasons:
        reasons.append("no rule fired; the edit is the cheaper lever")
    scores_text = f"scores: edit {scores['edit']:+.1f}, train {scores['train']:+.1f}"
    return f"{head}. {'; '.join(reasons)} ({scores_text})."


def _alternative(
    lever: str,
    scores: Mapping[str, float],
    fired: Sequence[LeverRule],
    evidence: Evidence,
    allowed: Sequence[str],
    edit: HarnessEdit | None,
    algorithm: AlgorithmRule,
) -> dict[str, Any]:
    why = [
        f"{rule.name} ({_weight(rule, lever):+.0f}): {rule.why(evidence)}"
        for rule in fired
        if _weight(rule, lever)
    ]
    if lever not in allowed:
        why.append("not allowed in this run's mode")
    alternative: dict[str, Any] = {
        "lever": lever,
        "score": scores[lever],
        "allowed": lever in allowed,
        "why": "; ".join(why) or "no rule spoke for or against it",
    }
    if lever == "edit":
        alternative["operator"] = edit.operator if edit else None
    else:
        alternative["algorithm"] = algorithm.algorithm
    return alternative


def _expected(
    lever: str,
    edit: HarnessEdit | None,
    algorithm: AlgorithmRule,
    diag: Diagnostics,
    history: Sequence[IterationRecord],
) -> str:
    best = _best_score(history)
    target = "the baseline validation score"
    if best is not None:
        target = f"the best validation score so far ({best:.3f})"
    if lever == "edit" and edit:
        effect = edit.effect or "a better harness"
        return (
            f"{effect[:1].upper()}{effect[1:]} (train rollout: {diag.success_rate:.0%} success, "
            f"{diag.parse_failure_rate:.0%} unparsable); validation accuracy should rise above "
            f"{target}."
        )
    return (
        f"An adapter trained with {algorithm.algorithm} on the train rollouts "
        f"({diag.success_rate:.0%} success) should lift validation accuracy above {target}."
    )
