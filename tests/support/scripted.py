"""Scripted test doubles: a pure simulator of the loop and scripted agents/runners.

Scores follow a script keyed by iteration so tests know exactly which candidates are
accepted; nothing here is used by the product.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sia.errors import NoCandidate
from sia.ports import (
    EvalRequest,
    EvalResult,
    FeedbackContext,
    HarnessDraft,
    RolloutRequest,
    RolloutResult,
    TrainedAdapter,
    TrainRequest,
)
from statemachine import events as ev
from statemachine.planner import (
    ApplyEdit,
    AskFeedback,
    Evaluate,
    PlanBatch,
    Record,
    RunRollout,
    TrainAdapter,
    WriteInitialHarness,
    next_step,
)
from statemachine.state import Envelope, RunState, evolve

TEMPLATE = {
    "harness.json": b'{"system_prompt": "Answer with a number.", "retries": 0}\n',
    "agent.py": b"def solve(client, item, config):\n    return '0'\n",
}


def fake_sha(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def val_score(iteration: int) -> float:
    """A script with gains and setbacks: odd iterations improve, every third regresses."""
    return round(0.2 + 0.05 * iteration - (0.3 if iteration % 3 == 2 else 0.0), 4)


#: The iteration whose TRAIN finds no signal and abandons its candidate.
ABANDONED_TRAIN = 8
ABANDON_REASON = "grpo: every group scored alike; no advantage to follow"


def lever_for(iteration: int, mode: str) -> str:
    if mode == "h":
        return "edit"
    if mode == "w":
        return "train"
    return "edit" if iteration % 2 else "train"


def decision(iteration: int, mode: str) -> ev.DecisionMade:
    lever = lever_for(iteration, mode)
    return ev.DecisionMade(
        iteration=iteration,
        lever=lever,
        agent="scripted",
        rationale=f"Iteration {iteration}: scripted {lever}.\nSecond line of the rationale.",
        diagnostics={"success_rate": 0.25, "parse_failures": 3},
        alternatives=({"lever": "edit", "score": 0.6}, {"lever": "train", "score": 0.4}),
        rules=("scripted-rule",),
        algorithm="grpo" if lever == "train" else None,
        algorithm_reason="clean binary reward" if lever == "train" else "",
        expected_effect="+5 points on val",
        edit={
            "summary": f"Tighten the answer format (iteration {iteration})",
            "files": {"prompts/system.txt": f"Answer with digits only. v{iteration}\n"},
        }
        if lever == "edit"
        else None,
    )


def simulate(run_id: str, *, iterations: int, mode: str = "w+h", seed: int = 0) -> list[Envelope]:
    """Drive the pure core with fabricated effect results; returns the run's envelopes."""
    config = {"budget": {"iterations": iterations}, "batch_size": 4}
    state = RunState(run_id)
    out: list[Envelope] = []

    def push(events: Sequence[ev.Event]) -> None:
        nonlocal state
        for event in events:
            env = Envelope(state.last_seq + 1, 1_700_000_000.0 + state.last_seq, event)
            state = evolve(state, env)
            out.append(env)

    push([ev.RunStarted(task="arith-v1", mode=mode, seed=seed, config=config)])
    while (step := next_step(state, now=0.0)) is not None:
        match step:
            case Record():
                push(step.events)
            case WriteInitialHarness():
                push(
                    [
                        ev.HarnessCommitted(
                            iteration=step.iteration,
                            commit=fake_sha(run_id, 0),
                            parent=None,
                            summary="Initial harness",
                        )
                    ]
                )
            case PlanBatch():
                ids = tuple(f"train-{(step.seed + k) % 200}" for k in range(4))
                push([ev.BatchPlanned(iteration=step.iteration, item_ids=ids, seed=step.seed)])
            case RunRollout():
                push(
                    [
                        ev.RolloutCompleted(
                            iteration=step.iteration,
                            harness_commit=step.harness_commit,
                            adapter_tag=step.adapter_tag,
                            episodes=4,
                            failures=1,
                            mean_reward=0.25,
                            metrics={"tokens": 100},
                        )
                    ]
                )
            case AskFeedback():
                push([decision(step.iteration, mode)])
            case ApplyEdit():
                push(
                    [
                        ev.HarnessCommitted(
                            iteration=step.iteration,
                            commit=fake_sha(run_id, step.iteration),
                            parent=step.parent,
                            summary="edit",
                        )
                    ]
                )
            case TrainAdapter() if step.iteration == ABANDONED_TRAIN:
                push([ev.CandidateAbandoned(step.iteration, "TRAIN", ABANDON_REASON)])
            case TrainAdapter():
                tag = f"lora/{run_id}/{step.iteration}"
                digest = hashlib.sha256(tag.encode()).hexdigest()
                push(
                    [
                        ev.AdapterTagged(
                            iteration=step.iteration,
                            tag=tag,
                            sha256=digest,
                            algorithm="grpo",
                            harness_commit=step.harness_commit,
                            manifest={"sha256": digest, "rank": 8},
                        )
                    ]
                )
            case Evaluate():
                cand = step.candidate
                score = val_score(step.iteration) if step.split == "val" else 0.5
                push(
                    [
                        ev.Evaluated(
                            iteration=step.iteration,
                            split=step.split,
                            harness_commit=cand.harness_commit,
                            adapter_tag=cand.adapter_tag,
                            score=score,
                            metrics={"n": 10},
                        )
                    ]
                )
    return out


# ── scripted components for the orchestrator ─────────────────────────────────────────────


@dataclass
class ScriptedTask:
    id: str = "arith-v1"
    description: str = "Add two numbers."

    def item_ids(self, split: str) -> Sequence[str]:
        return [f"{split}-{i}" for i in range(20)]

    def harness_template(self) -> dict[str, bytes]:
        return dict(TEMPLATE)


@dataclass
class ScriptedMeta:
    name: str = "scripted-meta"

    def initial_harness(self, task: ScriptedTask, *, run_id: str = "") -> HarnessDraft:
        return HarnessDraft(
            task.harness_template(), f"Initial harness for {task.id}\n\nFrom the template."
        )


@dataclass
class ScriptedFeedback:
    mode: str
    name: str = "scripted-feedback"
    contexts: list[FeedbackContext] = field(default_factory=list)

    def decide(self, context: FeedbackContext) -> ev.DecisionMade:
        self.contexts.append(context)
        return decision(context.iteration, self.mode)


@dataclass
class ScriptedRunner:
    """Scores a candidate by the iteration that produced it, per ``val_score``."""

    calls: list[object] = field(default_factory=list)

    def rollout(self, request: RolloutRequest) -> RolloutResult:
        self.calls.append(request)
        return RolloutResult(len(request.item_ids), 1, 0.25, {"tokens": 50})

    def evaluate(self, request: EvalRequest) -> EvalResult:
        self.calls.append(request)
        return EvalResult(
            val_score(request.iteration) if request.split == "val" else 0.5, {"n": 20}
        )


@dataclass
class ScriptedTrainer:
    workdir: Path
    calls: list[TrainRequest] = field(default_factory=list)

    def train(self, request: TrainRequest) -> TrainedAdapter:
        self.calls.append(request)
        if request.iteration == ABANDONED_TRAIN:
            raise NoCandidate(ABANDON_REASON)
        out = self.workdir / f"adapter-{request.run_id}-{request.iteration}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text('{"r": 8}\n')
        (out / "adapter_model.safetensors").write_bytes(
            hashlib.sha256(f"{request.run_id}/{request.iteration}".encode()).digest() * 64
        )
        return TrainedAdapter(
            out,
            request.decision.algorithm or "grpo",
            "scripted-base",
            {"rank": 8, "lr": 1e-4},
            {"loss": 0.5},
        )
