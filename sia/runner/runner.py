"""The harness runner: rollouts and evaluations as sandboxed harness processes.

Each episode runs the harness's ``agent.py`` in its own process (see ``sandbox``) against
the gateway, which attributes and records every model call. Rewards are computed here, in
the orchestrator, from the task's private items: labels never reach a harness process.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from ledger.records import CallRow, EpisodeRow
from sia.faults import crash_point
from sia.gateway import EpisodeTicket, Gateway
from sia.ports import EvalRequest, EvalResult, RolloutRequest, RolloutResult
from sia.runner.errors import RunnerError
from sia.runner.forkserver import ForkServer, fork_server_supported
from sia.runner.metrics import EpisodeOutcome, summarise
from sia.runner.sandbox import (
    EpisodeLimits,
    LiveProcesses,
    episode_env,
    landlock_available,
    run_episode_process,
)
from sia.runner.scratch import remove_scratch

if TYPE_CHECKING:
    from sia.runner.remote import RemoteEpisodes

__all__ = ["EpisodeBudget", "HarnessRunner", "RunnerTask", "build_job"]

_CONFIG_FILE = "harness.json"


class RunnerTask(Protocol):
    """What the runner needs of a task (``tasks.Task`` is one)."""

    def item_ids(self, split: str) -> Sequence[str]: ...

    def item(self, item_id: str) -> Any: ...

    def public_item(self, item_id: str) -> dict[str, Any]: ...

    def score(self, item: Any, answer_text: str) -> tuple[float, dict[str, Any]]: ...


class CallSink(Protocol):
    """The bulk tables of a ledger recorder: episodes and their calls."""

    def append_calls(self, rows: Sequence[CallRow]) -> None: ...

    def append_episodes(self, rows: Sequence[EpisodeRow]) -> None: ...

    def read_calls(self, run_id: str, iteration: int | None = None) -> list[CallRow]: ...

    def read_episodes(
        self, run_id: str, iteration: int | None = None, purpose: str | None = None
    ) -> list[EpisodeRow]: ...


def _episode_row(
    run_id: str, iteration: int, purpose: str, split: str, outcome: EpisodeOutcome, n_calls: int
) -> EpisodeRow:
    return EpisodeRow(
        run_id=run_id,
        iteration=iteration,
        purpose=purpose,
        split=split,
        episode_id=outcome.episode_id,
        item_id=outcome.item_id,
        reward=outcome.reward,
        status=outcome.status,
        reason=outcome.reason,
        n_calls=n_calls,
        duration_ms=outcome.duration_ms,
        answer=outcome.answer,
        reward_detail=json.dumps(outcome.detail, sort_keys=True) if outcome.detail else None,
    )


@dataclass(frozen=True)
class EpisodeBudget:
    """What one episode may spend at the gateway."""

    max_calls: int = 32
    max_tokens: int = 4096


@dataclass(frozen=True)
class _Episode:
    episode_id: str
    item_id: str
    seed: int | None


class HarnessRunner:
    """A :class:`~sia.ports.PolicyRunner` that runs harness programs against the gateway.

    ``concurrency`` episodes run at a time; their model calls meet in the gateway's batcher.
    ``progress(done, total)`` is called as episodes of a rollout or evaluation finish.
    Episodes are forked from a fork server (``zygote.py``) that has the harness's imports
    loaded, where the platform allows; ``fork_server=False`` starts a fresh interpreter per
    episode instead. :meth:`close` (or leaving the ``with`` block) stops the server.
    With ``remote``, episodes run on remote workers instead (see ``remote.py``).
    ``limits`` bounds each episode's files, processes and scratch folder (its ``timeout_s``
    and ``memory_mb`` give way to ``episode_timeout`` and ``memory_mb``).
    """

    def __init__(
        self,
        task: RunnerTask,
        gateway: Gateway,
        recorder: CallSink,
        *,
        concurrency: int = 4,
        episode_timeout: float | None = None,
        rollout_timeout: float = 1800.0,
        memory_mb: int = 2048,
        budget: EpisodeBudget | None = None,
        progress: Callable[[int, int], None] | None = None,
        fork_server: bool = True,
        remote: RemoteEpisodes | None = None,
        limits: EpisodeLimits | None = None,
    ) -> None:
        if concurrency < 1:
            raise RunnerError(f"concurrency must be >= 1, got {concurrency}")
        if episode_timeout is None:
            # Tasks whose episodes write long answers (code) or run a whole agent say so.
            episode_timeout = float(getattr(task, "episode_timeout_s", 60.0))
        if episode_timeout <= 0 or rollout_timeout <= 0:
            raise RunnerError("episode and rollout timeouts must be positive")
        if memory_mb < 64:
            raise RunnerError(f"memory_mb must be >= 64, got {memory_mb}")
        self._task = task
        self._gateway = gateway
        self._recorder = recorder
        self._concurrency = concurrency
        self._episode_timeout = episode_timeout
        self._rollout_timeout = rollout_timeout
        self._limits = replace(limits or EpisodeLimits(), memory_mb=memory_mb)
        self._budget = budget or EpisodeBudget()
        self._progress = progress
        self._live = LiveProcesses()
        self._remote = remote
        self._fork_server: ForkServer | None = None
        if fork_server and fork_server_supported():
            self._fork_server = ForkServer(
                episode_env(Path(tempfile.gettempdir())), landlock=landlock_available()
            )

    def close(self) -> None:
        """Stop the episode fork server (a later rollout starts it again)."""
        if self._fork_server is not None:
            self._fork_server.close()

    def __enter__(self) -> HarnessRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def rollout(self, request: RolloutRequest) -> RolloutResult:
        """Run the harness once per item id (repeats allowed) and record everything."""
        if not request.item_ids:
            raise RunnerError("a rollout needs at least one item")
        episodes = [
            _Episode(
                f"rollout-{request.iteration}-{index:05d}-{item_id}",
                item_id,
                _episode_seed(request.seed, index),
            )
            for index, item_id in enumerate(request.item_ids)
        ]
        outcomes, calls = self._run(
            run_id=request.run_id,
            iteration=request.iteration,
            purpose="rollout",
            split="train",
            harness_commit=request.harness_commit,
            harness=request.harness,
            adapter_tag=request.adapter_tag,
            adapter_path=request.adapter_path,
            episodes=episodes,
            temperature=request.temperature,
        )
        metrics = self._metrics(outcomes, calls)
        failures = sum(1 for outcome in outcomes if outcome.status != "ok")
        mean = sum(o.reward for o in outcomes) / len(outcomes)
        return RolloutResult(
            episodes=len(outcomes), failures=failures, mean_reward=mean, metrics=metrics
        )

    def evaluate(self, request: EvalRequest) -> EvalResult:
        """Run the harness on every item of ``request.split``; score is the mean reward."""
        item_ids = list(self._task.item_ids(request.split))
        if not item_ids:
            raise RunnerError(f"split {request.split!r} has no items")
        episodes = [
            _Episode(f"eval-{request.split}-{request.iteration}-{index:05d}-{item_id}", item_id, 0)
            for index, item_id in enumerate(item_ids)
        ]
        outcomes, calls = self._run(
            run_id=request.run_id,
            iteration=request.iteration,
            purpose="eval",
            split=request.split,
            harness_commit=request.harness_commit,
            harness=request.harness,
            adapter_tag=request.adapter_tag,
            adapter_path=request.adapter_path,
            episodes=episodes,
        )
        metrics = self._metrics(outcomes, calls)
        metrics["failures"] = sum(1 for outcome in outcomes if outcome.status != "ok")
        score = sum(o.reward for o in outcomes) / len(outcomes)
        return EvalResult(score=score, metrics=metrics)

    def _metrics(self, outcomes: list[EpisodeOutcome], calls: list[CallRow]) -> dict[str, Any]:
        # Tasks with a closed answer set say which answers are labels at all.
        return summarise(outcomes, calls, getattr(self._task, "valid_answer", None))

    def smoke(
        self, *, run_id: str, iteration: int, harness: Mapping[str, bytes], item_id: str
    ) -> EpisodeOutcome:
        """One episode of a proposed, uncommitted ``harness`` on ``item_id`` (a train item).

        The check an agent's harness change must pass before it is committed; recorded with
        purpose ``smoke`` and harness commit ``uncommitted``.
        """
        episode = _Episode(f"smoke-{iteration}-{secrets.token_hex(4)}-{item_id}", item_id, 0)
        outcomes, _ = self._run(
            run_id=run_id,
            iteration=iteration,
            purpose="smoke",
            split="train",
            harness_commit="uncommitted",
            harness=harness,
            adapter_tag=None,
            adapter_path=None,
            episodes=[episode],
        )
        return outcomes[0]

    def _map(
        self, one: Callable[[_Episode], EpisodeOutcome], episodes: Sequence[_Episode]
    ) -> list[EpisodeOutcome]:
        """``one`` over ``episodes``, ``concurrency`` at a time. If the waiting thread is
        interrupted (Ctrl-C), no further episode starts and the running ones are killed
        before the interrupt goes on; otherwise the pool would run every queued episode
        to the end first."""
        self._live.reset()
        pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="sia-episode")
        try:
            return list(pool.map(one, episodes))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self._live.stop()
            raise
        finally:
            pool.shutdown(wait=True)

    def _run(
        self,
        *,
        run_id: str,
        iteration: int,
        purpose: str,
        split: str,
        harness_commit: str,
        harness: Mapping[str, bytes],
        adapter_tag: str | None,
        adapter_path: Path | None,
        episodes: Sequence[_Episode],
        temperature: float | None = None,
    ) -> tuple[list[EpisodeOutcome], list[CallRow]]:
        """Run ``episodes`` and record each, with its calls, as soon as it finishes.

        Episodes this (run, iteration, purpose) already recorded (a rollout a crash cut
        short, resumed) are not run again: their recorded outcome and calls count.
        """
        config = _config(harness)
        base_url = self._gateway.start()
        # Rows of calls from before this run belong to whoever made them; keep them apart.
        stray = self._gateway.drain_calls()
        if stray:
            self._recorder.append_calls(stray)
        done, calls = self._recorded(run_id, iteration, purpose, episodes)
        todo = [episode for episode in episodes if episode.episode_id not in done]
        tag = adapter_tag if adapter_path is not None else None
        self._gateway.use_adapter(tag, adapter_path)
        deadline = time.monotonic() + self._rollout_timeout
        record = threading.Lock()
        try:
            with tempfile.TemporaryDirectory(prefix="sia-rollout-") as root:
                harness_dir = Path(root) / "harness"
                _write_harness(harness, harness_dir)
                scratch_root = Path(root) / "scratch"
                scratch_root.mkdir()
                finished = _Counter(len(episodes), self._progress, start=len(done))

                def one(episode: _Episode) -> EpisodeOutcome:
                    ticket = EpisodeTicket(
                        run_id=run_id,
                        iteration=iteration,
                        episode_id=episode.episode_id,
                        harness_commit=harness_commit,
                        adapter_tag=tag,
                        max_calls=self._budget.max_calls,
                        max_tokens=self._budget.max_tokens,
                        seed=episode.seed,
                        temperature=temperature,
                    )
                    outcome = self._episode(
                        episode, ticket, harness_dir, scratch_root, config, base_url, deadline
                    )
                    made = self._gateway.drain_calls(episode.episode_id)
                    row = _episode_row(run_id, iteration, purpose, split, outcome, len(made))
                    with record:
                        # Calls first: an episode row on record means its calls are too.
                        if made:
                            self._recorder.append_calls(made)
                        self._recorder.append_episodes([row])
                        calls.extend(made)
                    finished.tick()
                    crash_point("after-episode")
                    return outcome

                ran = dict(zip((e.episode_id for e in todo), self._map(one, todo), strict=True))
        finally:
            if tag is not None:
                self._gateway.use_adapter(None)
        outcomes = [done.get(e.episode_id) or ran[e.episode_id] for e in episodes]
        return outcomes, calls

    def _recorded(
        self, run_id: str, iteration: int, purpose: str, episodes: Sequence[_Episode]
    ) -> tuple[dict[str, EpisodeOutcome], list[CallRow]]:
        """Outcomes and calls of ``episodes`` that are already on record."""
        wanted = {episode.episode_id: episode.item_id for episode in episodes}
        rows = [
            row
            for row in self._recorder.read_episodes(run_id, iteration, purpose)
            if wanted.get(row.episode_id) == row.item_id
        ]
        if not rows:
            return {}, []
        done = {
            row.episode_id: EpisodeOutcome(
                row.episode_id,
                row.item_id,
                row.status,
                row.reason,
                row.answer,
                row.reward or 0.0,
                row.duration_ms,
                json.loads(row.reward_detail) if row.reward_detail else None,
            )
            for row in rows
        }
        calls = [c for c in self._recorder.read_calls(run_id, iteration) if c.episode_id in done]
        return done, calls

    def _episode(
        self,
        episode: _Episode,
        ticket: EpisodeTicket,
        harness_dir: Path,
        scratch_root: Path,
        config: dict[str, Any],
        base_url: str,
        deadline: float,
    ) -> EpisodeOutcome:
        left = deadline - time.monotonic()
        if left <= 0:
            return EpisodeOutcome(
                episode.episode_id,
                episode.item_id,
                "timeout",
                f"rollout exceeded {self._rollout_timeout:g}s before the episode started",
                None,
                0.0,
                0.0,
            )
        timeout = min(self._episode_timeout, left)
        token = self._gateway.register_episode(ticket)
        scratch = Path(tempfile.mkdtemp(prefix="episode-", dir=scratch_root))
        try:
            job = build_job(
                self._task.public_item(episode.item_id), config, base_url, token, timeout
            )
            limits = replace(self._limits, timeout_s=timeout)
            if self._remote is not None:
                outcome = self._remote.run(harness_dir, job, limits)
            else:
                outcome = run_episode_process(
                    harness_dir, scratch, job, limits, self._fork_server, self._live
                )
        finally:
            self._gateway.release_episode(token)
            # The quota bounds one episode; without this, a long rollout would add them up.
            remove_scratch(scratch)
        if outcome.status != "ok" or outcome.answer is None:
            return EpisodeOutcome(
                episode.episode_id,
                episode.item_id,
                outcome.status,
                outcome.reason,
                None,
                0.0,
                outcome.duration_ms,
            )
        reward, detail = self._task.score(self._task.item(episode.item_id), outcome.answer)
        return EpisodeOutcome(
            episode.episode_id,
            episode.item_id,
            "ok",
            "",
            outcome.answer,
            float(reward),
            outcome.duration_ms,
            detail or None,
        )


def build_job(
    public_item: dict[str, Any],
    config: dict[str, Any],
    base_url: str,
    token: str,
    timeout: float,
) -> dict[str, Any]:
    """The whole of what an episode process is told: nothing private to the task."""
    return {
        "item": public_item,
        "config": config,
        "base_url": base_url,
        "token": token,
        "request_timeout": timeout,
    }


def _config(harness: Mapping[str, bytes]) -> dict[str, Any]:
    if "agent.py" not in harness:
        raise RunnerError("the harness has no agent.py")
    raw = harness.get(_CONFIG_FILE)
    if raw is None:
        return {}
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunnerError(f"{_CONFIG_FILE} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise RunnerError(f"{_CONFIG_FILE} must hold a JSON object")
    return config


def _write_harness(harness: Mapping[str, bytes], directory: Path) -> None:
    for name, content in harness.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise RunnerError(f"harness file {name!r} escapes the harness folder")
        path = directory.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    # Harness files are read-only to the harness: one episode cannot rewrite the next.
    for path in directory.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    directory.chmod(0o555)


class _Counter:
    """Finished episodes, reported from the pool's threads one at a time."""

    def __init__(
        self, total: int, report: Callable[[int, int], None] | None, start: int = 0
    ) -> None:
        self.total, self.done, self.report = total, start, report
        self.lock = threading.Lock()
        if report is not None:
            report(start, total)

    def tick(self) -> None:
        if self.report is None:
            return
        with self.lock:
            self.done += 1
            self.report(self.done, self.total)


def _episode_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % 2**63
