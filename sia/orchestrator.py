"""Drives a run: asks the pure core what comes next, performs it, records the result.

The orchestrator holds no state of its own: it folds the ledger, executes the step that
``statemachine.next_step`` returns (a git commit, a rollout, an agent call, training, an
evaluation) and appends the events that report it. On resume it settles effects that
happened but were never recorded, so nothing is done twice.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from harness_repo import ArtifactStore, HarnessRepo, StorageFull, is_disk_full, tagged_adapter
from harness_repo.repo import validate_run_id
from ledger import NewEvent, Recorder
from sia.agents.patches import patched
from sia.audit import check_resumable
from sia.config import RunConfig
from sia.errors import (
    EffectFailed,
    Interrupted,
    NoCandidate,
    RunExists,
    RunNotResumable,
    SiaError,
)
from sia.faults import crash_point
from sia.history import run_state
from sia.ports import (
    Components,
    EvalRequest,
    FeedbackContext,
    RecordsCalls,
    RolloutRequest,
    TrainRequest,
)
from statemachine import events as ev
from statemachine.codec import encode
from statemachine.planner import (
    ApplyEdit,
    AskFeedback,
    Evaluate,
    PlanBatch,
    Record,
    RunRollout,
    Step,
    TrainAdapter,
    WriteInitialHarness,
    iteration_seed,
    next_step,
)
from statemachine.replay import envelopes
from statemachine.state import Envelope, RunState, evolve

__all__ = ["Orchestrator", "RunObserver"]


class RunObserver(Protocol):
    """Watches a run being driven (a progress display); it never changes what happens."""

    def step_started(self, state: RunState, step: Step) -> None: ...

    def events_appended(self, state: RunState, events: Sequence[ev.Event]) -> None: ...


class Orchestrator:
    def __init__(
        self,
        *,
        recorder: Recorder,
        repo: HarnessRepo,
        artifacts: ArtifactStore,
        components: Components,
        clock: Callable[[], float] = time.time,
        observer: RunObserver | None = None,
        stop_requested: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.recorder, self.repo, self.artifacts = recorder, repo, artifacts
        self.c = components
        self.clock = clock
        self.observer = observer
        self.stop_requested = stop_requested
        # One handler per step type; a step the core invents without a handler fails loudly.
        self._effects: dict[type[Step], Callable[[RunState, Any], Sequence[ev.Event]]] = {
            Record: lambda _state, step: step.events,
            WriteInitialHarness: self._write_initial_harness,
            PlanBatch: self._plan_batch,
            RunRollout: self._rollout,
            AskFeedback: self._ask_feedback,
            ApplyEdit: self._apply_edit,
            TrainAdapter: self._train,
            Evaluate: self._evaluate,
        }

    # ── lifecycle ────────────────────────────────────────────────────────────────────────

    def start(self, run_id: str, config: RunConfig) -> RunState:
        validate_run_id(run_id)  # it names a git branch: refused before any event is written
        if self.recorder.head(run_id) is not None:
            raise RunExists(f"run {run_id} already exists (use `sia resume {run_id}`)")
        first = ev.RunStarted(
            task=config.task, mode=config.mode, seed=config.seed, config=config.to_dict()
        )
        return self.drive(self.append(RunState(run_id), [first]))

    def branch(
        self, parent_run: str, at_iteration: int, run_id: str, config: RunConfig
    ) -> RunState:
        """Start ``run_id`` from ``parent_run`` as it stood when ``at_iteration`` closed.

        The new run's best candidate is the parent's best at that point (harness commit,
        adapter tag, val score); its harness branch starts at that commit. ``config`` may
        change the mode, budget or agents, not the task. Nothing runs: ``resume`` drives it.
        """
        validate_run_id(run_id)
        if self.recorder.head(run_id) is not None:
            raise RunExists(f"run {run_id} already exists")
        if self.recorder.head(parent_run) is None:
            raise SiaError(f"no run named {parent_run}")
        before, seq = _state_when_closed(self.recorder.read(parent_run), parent_run, at_iteration)
        if config.task != before.task:
            raise SiaError(f"a branch keeps its parent's task ({before.task})")
        best = before.best
        assert best is not None  # a closed iteration follows an evaluated baseline
        event = ev.RunBranched(
            parent_run=parent_run,
            parent_seq=seq,
            at_iteration=at_iteration,
            task=config.task,
            mode=config.mode,
            seed=config.seed,
            harness_commit=best.harness_commit,
            adapter_tag=best.adapter_tag,
            best_score=best.score,
            config=config.to_dict(),
        )
        # The git branch first: re-running a branch that died here finds it in place.
        self.repo.create_branch(run_id, best.harness_commit)
        return self.append(RunState(run_id), [event])

    def resume(self, run_id: str) -> RunState:
        if self.recorder.head(run_id) is None:
            raise RunNotResumable(f"no run named {run_id}")
        state = run_state(self.recorder, run_id)
        if state.status != "running":
            raise RunNotResumable(f"run {run_id} is {state.status}; branch it to continue")
        # A missing adapter or a hand-made commit on the branch stops us before anything is
        # appended: building on either would record a history that does not hold together.
        check_resumable(self.recorder, self.repo, self.artifacts, run_id)
        state, notes = self.reconcile(state)
        state = self.append(state, [ev.RunResumed(pid=os.getpid(), reconciled=tuple(notes))])
        return self.drive(state)

    def drive(self, state: RunState) -> RunState:
        """Perform steps until the run ends. ``KeyboardInterrupt`` (Ctrl-C; the CLI turns
        SIGTERM into one) records ``RunInterrupted`` and raises :class:`Interrupted`; so
        does a stop named by ``stop_requested`` whose interrupt got lost on its way."""
        step: Step | None = None
        try:
            while (step := next_step(state, now=self.clock())) is not None:
                if signal := self.stop_requested():
                    raise KeyboardInterrupt(signal)
                if self.observer is not None:
                    self.observer.step_started(state, step)
                events = self._perform(state, step)
                crash_point("after-effect")
                state = self.append(state, events)
        except KeyboardInterrupt as stop:
            raise self._interrupted(state.run_id, step, str(stop) or "SIGINT") from None
        return state

    def _perform(self, state: RunState, step: Step) -> Sequence[ev.Event]:
        """The events reporting ``step``'s effect, its failure included."""
        try:
            return self._effects[type(step)](state, step)
        except NoCandidate as exc:
            assert isinstance(step, ApplyEdit | TrainAdapter), step
            phase = "EDIT" if isinstance(step, ApplyEdit) else "TRAIN"
            return [ev.CandidateAbandoned(iteration=step.iteration, phase=phase, reason=str(exc))]
        except EffectFailed as exc:
            phase = state.phase.value if state.phase else "PLAN"
            return [ev.RunFailed(phase=phase, error=str(exc))]

    def _interrupted(self, run_id: str, step: Step | None, signal: str) -> Interrupted:
        # The ledger, not the loop's state, says what got in before the interrupt.
        state = run_state(self.recorder, run_id)
        phase = state.phase.value if state.phase else "PLAN"
        if state.status == "running":
            event = ev.RunInterrupted(
                phase=phase,
                iteration=state.iteration,
                step=type(step).__name__ if step is not None else "",
                signal=signal,
            )
            self.append(state, [event])
        return Interrupted(
            f"{signal}: stopped in {phase} of iteration {state.iteration}; "
            f"continue with: sia resume {run_id}"
        )

    def append(self, state: RunState, events: Sequence[ev.Event]) -> RunState:
        """Validate ``events`` by folding them, then store them in one transaction."""
        ts = self.clock()
        new = state
        for i, event in enumerate(events, start=state.last_seq + 1):
            new = evolve(new, Envelope(i, ts, event))
        self.recorder.append(
            state.run_id,
            [NewEvent(*encode(e)) for e in events],
            expected_seq=state.last_seq,
            ts=ts,
        )
        crash_point("after-append")
        if self.observer is not None:
            self.observer.events_appended(new, events)
        return new

    # ── crash reconciliation ─────────────────────────────────────────────────────────────

    def reconcile(self, state: RunState) -> tuple[RunState, list[str]]:
        """Adopt an effect that finished without its event; discard what cannot be adopted."""
        notes: list[str] = []
        step = next_step(state, now=self.clock())
        run = state.run_id
        if isinstance(step, WriteInitialHarness | ApplyEdit):
            sha = self.repo.find_commit(run, {"Sia-Run": run, "Sia-Event": str(state.last_seq + 1)})
            if sha is not None:
                info = self.repo.commit_info(sha)
                parent = step.parent if isinstance(step, ApplyEdit) else None
                event = ev.HarnessCommitted(
                    iteration=step.iteration,
                    commit=sha,
                    parent=parent,
                    summary=info.subject,
                    adopted=True,
                )
                state = self.append(state, [event])
                notes.append(f"adopted commit {sha[:12]} of iteration {step.iteration}")
        elif isinstance(step, TrainAdapter):
            tag = HarnessRepo.adapter_tag_name(run, step.iteration)
            if tag in self.repo.adapter_tags(run):
                manifest = self.repo.adapter_manifest(tag)
                self.artifacts.verify(manifest["sha256"])
                state = self.append(state, [self._tagged(step, tag, manifest, adopted=True)])
                notes.append(f"adopted adapter tag {tag}")
        known = self._known_commits(state)
        tip = self.repo.branch_tip(run)
        if tip is not None and tip not in known and known:
            self.repo.reset_branch(run, known[-1])
            notes.append(f"discarded unrecorded commit {tip[:12]}")
        return state, notes

    @staticmethod
    def _known_commits(state: RunState) -> list[str]:
        commits = [state.origin.harness_commit] if state.origin else []
        return commits + [r.harness_commit for r in state.iterations if r.harness_commit]

    # ── effects ──────────────────────────────────────────────────────────────────────────

    def _commit(
        self,
        state: RunState,
        iteration: int,
        files: dict[str, bytes],
        rationale: str,
        parent: str | None,
    ) -> str:
        run = state.run_id
        tip = self.repo.branch_tip(run)
        if parent is not None and tip is not None and tip != parent:
            # The tip is a rejected candidate: keep it reachable, start again from the best.
            self.repo.keep_rejected(run, tip)
            self.repo.reset_branch(run, parent)
        sha = self.repo.commit(
            run,
            files,
            message=rationale,
            trailers={
                "Sia-Run": run,
                "Sia-Iteration": str(iteration),
                "Sia-Event": str(state.last_seq + 1),
            },
            when=self.clock(),
            parent=parent,
        )
        crash_point("after-commit")
        return sha

    def _consult(self, state: RunState, agent: object, ask: Callable[[], Any]):
        """``ask()`` and the agent's call records; on failure the records are stored first."""
        try:
            answer = ask()
        except BaseException:
            calls = _agent_events(agent)
            if calls:
                self.append(state, calls)
            raise
        return answer, _agent_events(agent)

    def _write_initial_harness(self, state: RunState, step: WriteInitialHarness):
        meta = self.c.meta
        draft, calls = self._consult(
            state, meta, lambda: meta.initial_harness(self.c.task, run_id=state.run_id)
        )
        # The commit's Sia-Event trailer names the seq its event gets: after the calls.
        at = dataclasses.replace(state, last_seq=state.last_seq + len(calls))
        sha = self._commit(at, step.iteration, draft.files, draft.rationale, None)
        summary = draft.rationale.splitlines()[0] if draft.rationale else ""
        return [
            *calls,
            ev.HarnessCommitted(iteration=step.iteration, commit=sha, parent=None, summary=summary),
        ]

    def _plan_batch(self, state: RunState, step: PlanBatch):
        ids = list(self.c.task.item_ids("train"))
        if not ids:
            raise EffectFailed(f"task {self.c.task.id} has no train items")
        size = min(int(state.config.get("batch_size", 16)), len(ids))
        chosen = random.Random(step.seed).sample(ids, size)
        # Each item runs group_size times, side by side: one group per item.
        group = int(state.config.get("group_size") or 1)
        batch = tuple(item for item in chosen for _ in range(group))
        return [ev.BatchPlanned(iteration=step.iteration, item_ids=batch, seed=step.seed)]

    def _adapter_path(self, tag: str | None) -> Path | None:
        if tag is None:
            return None
        return tagged_adapter(self.repo, self.artifacts, tag)

    def _rollout(self, state: RunState, step: RunRollout):
        result = self.c.runner.rollout(
            RolloutRequest(
                run_id=state.run_id,
                iteration=step.iteration,
                harness_commit=step.harness_commit,
                harness=self.repo.files_at(step.harness_commit),
                adapter_tag=step.adapter_tag,
                adapter_path=self._adapter_path(step.adapter_tag),
                item_ids=step.item_ids,
                seed=iteration_seed(state.seed, step.iteration),
                temperature=state.config.get("rollout_temperature"),
            )
        )
        return [
            ev.RolloutCompleted(
                iteration=step.iteration,
                harness_commit=step.harness_commit,
                adapter_tag=step.adapter_tag,
                episodes=result.episodes,
                failures=result.failures,
                mean_reward=result.mean_reward,
                metrics=result.metrics,
            )
        ]

    def _ask_feedback(self, state: RunState, step: AskFeedback):
        assert state.best is not None and state.current and state.current.rollout
        context = FeedbackContext(
            run_id=state.run_id,
            iteration=step.iteration,
            levers=step.levers,
            harness=self.repo.files_at(state.best.harness_commit),
            rollout=state.current.rollout,
            history=state.history.as_tuple(),
        )
        feedback = self.c.feedback
        decision, calls = self._consult(state, feedback, lambda: feedback.decide(context))
        forced = state.config.get("algorithm")
        if forced and decision.lever == "train" and decision.algorithm != forced:
            decision = dataclasses.replace(
                decision,
                algorithm=forced,
                algorithm_reason=f"forced by the run config (the agent chose "
                f"{decision.algorithm}: {decision.algorithm_reason})",
            )
        return [*calls, decision]

    def _apply_edit(self, state: RunState, step: ApplyEdit):
        edit = step.decision.edit or {}
        files = patched(self.repo.files_at(step.parent), edit.get("files", {}))
        summary = edit.get("summary") or step.decision.rationale.splitlines()[0]
        message = f"{summary}\n\n{step.decision.rationale}"
        sha = self._commit(state, step.iteration, files, message, step.parent)
        return [
            ev.HarnessCommitted(
                iteration=step.iteration, commit=sha, parent=step.parent, summary=summary
            )
        ]

    def _tagged(self, step: TrainAdapter, tag: str, manifest: dict, *, adopted: bool = False):
        return ev.AdapterTagged(
            iteration=step.iteration,
            tag=tag,
            sha256=manifest["sha256"],
            algorithm=manifest["algorithm"],
            harness_commit=step.harness_commit,
            manifest=manifest,
            adopted=adopted,
        )

    def _train(self, state: RunState, step: TrainAdapter):
        if self.c.trainer is None:
            raise EffectFailed("this policy backend cannot train adapters (mode w needs hf)")
        algorithm = step.decision.algorithm or ""
        run, iteration = state.run_id, step.iteration
        # A full disk is no verdict on the candidate: the run stops with nothing recorded, so
        # `sia resume` trains this iteration again once there is space. The trainer may have
        # wrapped it (a training worker's ENOSPC reaches us as NoCandidate): causes count.
        again = (
            f"run {run} stopped in TRAIN of iteration {iteration} with nothing recorded: "
            f"free space, then: sia resume {run}"
        )
        try:
            trained = self.c.trainer.train(
                TrainRequest(
                    run_id=run,
                    iteration=iteration,
                    harness_commit=step.harness_commit,
                    base_adapter_path=self._adapter_path(step.base_adapter),
                    item_ids=step.item_ids,
                    decision=step.decision,
                    seed=iteration_seed(state.seed, iteration),
                )
            )
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            raise StorageFull(
                f"no space left on device while the trainer wrote the adapter "
                f"({_one_line(exc)}); {again}"
            ) from exc
        try:
            digest = self.artifacts.put(trained.path)
        except StorageFull as exc:
            raise StorageFull(f"{exc}; {again}") from exc
        crash_point("after-artifact")
        manifest = {
            "sha256": digest,
            "algorithm": trained.algorithm or algorithm,
            "base_model": trained.base_model,
            "config": trained.config,
            "metrics": trained.metrics,
            "run": state.run_id,
            "iteration": step.iteration,
            "harness_commit": step.harness_commit,
            "parent_adapter": step.base_adapter,
            "seed": iteration_seed(state.seed, step.iteration),
        }
        tag = self.repo.tag_adapter(
            state.run_id, step.iteration, step.harness_commit, manifest, when=self.clock()
        )
        crash_point("after-tag")
        return [self._tagged(step, tag, manifest)]

    def _evaluate(self, state: RunState, step: Evaluate):
        cand = step.candidate
        result = self.c.runner.evaluate(
            EvalRequest(
                run_id=state.run_id,
                iteration=step.iteration,
                split=step.split,
                harness_commit=cand.harness_commit,
                harness=self.repo.files_at(cand.harness_commit),
                adapter_tag=cand.adapter_tag,
                adapter_path=self._adapter_path(cand.adapter_tag),
            )
        )
        return [
            ev.Evaluated(
                iteration=step.iteration,
                split=step.split,
                harness_commit=cand.harness_commit,
                adapter_tag=cand.adapter_tag,
                score=result.score,
                metrics=result.metrics,
            )
        ]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _agent_events(agent: object) -> list[ev.Event]:
    """What a model-backed agent's last answer cost (nothing for the offline agents)."""
    return agent.take_events() if isinstance(agent, RecordsCalls) else []


def _state_when_closed(records, run_id: str, iteration: int) -> tuple[RunState, int]:
    """The run's state just before ``iteration`` closed, and the seq of its last event."""
    state, previous = RunState(run_id), None
    for envelope in envelopes(records):
        state_before, state = state, evolve(state, envelope)
        # History grows by one record when an iteration closes, in iteration order.
        closed = len(state.history) > len(state_before.history)
        if closed and state.history[-1].iteration == iteration:
            assert previous is not None
            return state_before, previous
        previous = envelope.seq
    first = state.branched_at + 1 if state.branched_at is not None else 0
    if iteration < first:
        raise SiaError(
            f"iteration {iteration} is before {run_id} branched from {state.parent[0]}; "
            f"branch {state.parent[0]} instead"
        )
    raise SiaError(f"iteration {iteration} of {run_id} has not finished")
