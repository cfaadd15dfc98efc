"""A recorded workspace for report tests: a scripted run that leaves what a live run leaves.

The agents, runner and trainer follow the script of ``tests.support.scripted`` (so the
verdicts are known), and on top they record what the real components record: episode
rows and model-call rows in the ledger's bulk tables, ``AgentCalled`` costs (and one
``PatchRejected``), and per-step training metrics in the shape ``rl.train`` reports.
The ledger, the harness repo and the artifact store are the real ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ledger import CallRow, EpisodeRow, Recorder
from sia.orchestrator import Orchestrator
from sia.ports import (
    Components,
    EvalRequest,
    EvalResult,
    FeedbackContext,
    HarnessDraft,
    RolloutRequest,
    RolloutResult,
    TrainedAdapter,
    TrainRequest,
)
from sia.workspace import Workspace
from statemachine import events as ev
from tests.support.run_scripted import StepClock, config
from tests.support.scripted import (
    ScriptedFeedback,
    ScriptedMeta,
    ScriptedTask,
    ScriptedTrainer,
    val_score,
)

__all__ = ["EVAL_EPISODES", "record_workspace"]

EVAL_EPISODES = 20
TEST_SCORE = 0.5


def rollout_reward(iteration: int, k: int) -> float:
    """Spread-out rewards in [0, 1] whose distribution moves up with the iteration."""
    return min(1.0, round((k * 3 % 5) / 4 * (0.5 + 0.15 * iteration), 4))


def _tokens(*parts: object, n: int) -> list[int]:
    seed = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return [seed[i % len(seed)] for i in range(n)]


def _episode(
    request: RolloutRequest | EvalRequest,
    purpose: str,
    split: str,
    k: int,
    item: str,
    reward: float,
    status: str,
    ts: float,
) -> tuple[EpisodeRow, list[CallRow]]:
    """One episode row and its model calls (one or two, of lengths that vary with k)."""
    run_id, iteration = request.run_id, request.iteration
    commit, adapter = request.harness_commit, request.adapter_tag
    episode_id = f"{purpose}-{iteration}-{k:05d}-{item}"
    calls = [
        CallRow(
            run_id=run_id,
            iteration=iteration,
            episode_id=episode_id,
            call_index=index,
            ts=ts,
            harness_commit=commit,
            adapter_tag=adapter,
            messages_json=json.dumps([{"role": "user", "content": item}]),
            prompt_ids=_tokens(episode_id, index, "p", n=12 + k % 7),
            completion_ids=_tokens(episode_id, index, "c", n=3 + (k * 5) % 11),
            logprobs=[-0.5] * (3 + (k * 5) % 11),
            finish_reason="stop",
            latency_ms=10.0 + k,
            completion_text=str(k),
            temperature=1.0,
        )
        for index in range(1 + k % 2)
    ]
    row = EpisodeRow(
        run_id=run_id,
        iteration=iteration,
        purpose=purpose,
        split=split,
        episode_id=episode_id,
        item_id=item,
        reward=reward,
        status=status,
        reason="" if status == "ok" else "harness raised ValueError",
        n_calls=len(calls),
        duration_ms=20.0 + k,
        answer=str(k) if status == "ok" else None,
    )
    return row, calls


@dataclass
class RecordingRunner:
    """Scores as ``ScriptedRunner`` does and records every episode and call it ran."""

    recorder: Recorder
    clock: StepClock

    def _record(self, rows: list[tuple[EpisodeRow, list[CallRow]]]) -> int:
        calls = [c for _, cs in rows for c in cs]
        self.recorder.append_calls(calls)
        self.recorder.append_episodes([row for row, _ in rows])
        return sum(len(c.prompt_ids) + len(c.completion_ids) for c in calls)

    def rollout(self, request: RolloutRequest) -> RolloutResult:
        ts, it = self.clock.now, request.iteration
        rows = []
        for k, item in enumerate(request.item_ids):
            failed = k == len(request.item_ids) - 1  # the last episode of a batch crashes
            reward = 0.0 if failed else rollout_reward(it, k)
            status = "error" if failed else "ok"
            rows.append(_episode(request, "rollout", "train", k, item, reward, status, ts))
        tokens = self._record(rows)
        rewards = [row.reward for row, _ in rows]
        failures = sum(1 for row, _ in rows if row.status != "ok")
        return RolloutResult(len(rows), failures, sum(rewards) / len(rewards), {"tokens": tokens})

    def evaluate(self, request: EvalRequest) -> EvalResult:
        score = val_score(request.iteration) if request.split == "val" else TEST_SCORE
        right = round(score * EVAL_EPISODES)
        rows = [
            _episode(
                request,
                "eval",
                request.split,
                k,
                f"{request.split}-{k}",
                1.0 if k < right else 0.0,
                "ok",
                self.clock.now,
            )
            for k in range(EVAL_EPISODES)
        ]
        self._record(rows)
        return EvalResult(score, {"n": EVAL_EPISODES})


def _agent_call(iteration: int, agent: str, k: int, cost: float | None) -> ev.AgentCalled:
    return ev.AgentCalled(
        iteration=iteration,
        agent=agent,
        model="claude-sonnet-4-5" if cost is not None else "local-unpriced",
        input_tokens=1000 + 100 * iteration + k,
        output_tokens=200 + 10 * iteration + k,
        cache_read_tokens=50 * k,
        cost_usd=cost,
        latency_ms=1500.0,
        stop_reason="end_turn",
    )


@dataclass
class PricedMeta(ScriptedMeta):
    """The scripted Meta Agent, with the cost of one priced model call per harness."""

    pending: list[ev.Event] = field(default_factory=list)

    def initial_harness(self, task: ScriptedTask, *, run_id: str = "") -> HarnessDraft:
        self.pending = [_agent_call(0, self.name, 0, 0.0123)]
        return super().initial_harness(task, run_id=run_id)

    def take_events(self) -> list[ev.Event]:
        out, self.pending = self.pending, []
        return out


@dataclass
class PricedFeedback(ScriptedFeedback):
    """The scripted Feedback Agent; each decision costs two calls, one of them unpriced,
    and iteration 3's first proposal fails its smoke check before the one it keeps."""

    pending: list[ev.Event] = field(default_factory=list)

    def decide(self, context: FeedbackContext) -> ev.DecisionMade:
        it = context.iteration
        self.pending = [_agent_call(it, self.name, 1, 0.001 * it)]
        if it == 3:
            self.pending.append(
                ev.PatchRejected(
                    iteration=it,
                    agent=self.name,
                    attempt=1,
                    stage="smoke",
                    reason="episode on train-0 ended error: NameError",
                    patch="--- a/agent.py\n+++ b/agent.py\n",
                )
            )
        self.pending.append(_agent_call(it, self.name, 2, None))
        return super().decide(context)

    def take_events(self) -> list[ev.Event]:
        out, self.pending = self.pending, []
        return out


@dataclass
class CurveTrainer(ScriptedTrainer):
    """The scripted trainer, reporting metrics as ``rl.train`` does: lists per step."""

    steps: int = 6

    def train(self, request: TrainRequest) -> TrainedAdapter:
        trained = super().train(request)
        it, n = request.iteration, self.steps
        metrics = {
            "loss": [round(1.0 / (1 + step + it), 6) for step in range(n)],
            "grad_norm": [round(2.0 - 0.1 * step + 0.05 * it, 6) for step in range(n)],
            "stats": {"approx_kl": [round(0.01 * step * (1 + it / 4), 6) for step in range(n)]},
            "steps": n,
            "samples": 4 * n,
            "mean_reward": 0.25,
            "seconds": 1.5,
        }
        return dataclasses.replace(trained, metrics=metrics)


def _orchestrator(ws: Workspace, recorder: Recorder, mode: str, clock: StepClock) -> Orchestrator:
    components = Components(
        task=ScriptedTask(),
        meta=PricedMeta(),
        feedback=PricedFeedback(mode),
        runner=RecordingRunner(recorder, clock),
        trainer=CurveTrainer(ws.root / "scratch"),
    )
    return Orchestrator(
        recorder=recorder,
        repo=ws.repo(),
        artifacts=ws.artifacts(),
        components=components,
        clock=clock,
    )


def record_workspace(root: Path) -> Workspace:
    """Run ``r`` (w+h, 4 iterations: edit, rejected train, edit, train; then test) and
    branch ``r-b`` from it after iteration 1 (mode h, 2 iterations)."""
    ws = Workspace.create(root)
    clock = StepClock()
    with ws.writer() as recorder:
        _orchestrator(ws, recorder, "w+h", clock).start("r", config("w+h", 4))
        orch = _orchestrator(ws, recorder, "h", clock)
        orch.branch("r", 1, "r-b", config("h", 2))
        orch.resume("r-b")
    return ws
