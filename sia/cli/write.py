"""Commands that write to the ledger: they take the workspace's single-writer lock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console

from harness_repo.repo import validate_run_id
from sia.audit import check_resumable
from sia.cli.integrity import check_readable, refuse_altered
from sia.cli.live import RunView, score_table, summary
from sia.cli.main import cli, pass_workspace
from sia.cli.options import COUNT, POSITIVE, SECONDS, TEMPERATURE, agent_options
from sia.config import AGENTS, BACKENDS, RunConfig
from sia.history import run_state
from sia.orchestrator import Orchestrator
from sia.stopping import stop_signals
from sia.wiring import check_supported, open_components
from sia.workspace import Workspace
from statemachine.planner import Budget
from statemachine.state import RunState
from tasks import get_task
from tasks.errors import TaskDirError, TaskError
from tasks.registry import DIR_PREFIX

__all__ = ["branch", "resume", "run"]


def _drive(ws: Workspace, config: RunConfig, act, *, quiet: bool, as_json: bool) -> None:
    check_readable(ws)  # a damaged ledger is refused before the writer touches it
    console = Console(stderr=as_json, quiet=quiet)
    # SIGTERM stops a run as gracefully as Ctrl-C: recorded, resumable.
    with stop_signals() as stop:
        state = _drive_in(ws, config, act, console, quiet, stop.requested)
    if as_json:
        click.echo(json.dumps(summary(state), indent=2))
        return
    console.print(score_table(state))
    if state.error:
        console.print(f"[red]failed[/]: {state.error}")
    console.print(f"inspect it with: sia replay {state.run_id}")


def _drive_in(
    ws: Workspace,
    config: RunConfig,
    act,
    console: Console,
    quiet: bool,
    stop_requested: Callable[[], str | None],
) -> RunState:
    with (
        ws.writer() as recorder,
        RunView(console, config.budget.iterations, quiet=quiet) as view,
        open_components(config, recorder, progress=view.episodes) as components,
    ):
        orch = Orchestrator(
            recorder=recorder,
            repo=ws.repo(),
            artifacts=ws.artifacts(),
            components=components,
            observer=view,
            stop_requested=stop_requested,
        )
        return act(orch)


_quiet = click.option("--quiet", is_flag=True, help="No progress display; only the final table.")
_as_json = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout (progress on stderr)."
)


@cli.command()
@click.option("--task", default="arith", show_default=True, help="Task id (see `sia tasks`).")
@click.option(
    "--task-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A SIA-format task directory (data/public/task.md, evaluate.py, …) instead of --task.",
)
@click.option(
    "--mode",
    type=click.Choice(["h", "w", "w+h"]),
    default="h",
    show_default=True,
    help="h: harness edits only; w: LoRA training only; w+h: the agent chooses.",
)
@click.option("--iterations", type=COUNT, default=3, show_default=True, help="Iteration budget.")
@click.option("--wall-seconds", type=SECONDS, help="Wall-time budget.")
@click.option("--tokens", type=POSITIVE, default=None, help="Policy token budget.")
@click.option(
    "--batch-size", type=POSITIVE, default=16, show_default=True, help="Items per rollout."
)
@click.option(
    "--group-size",
    type=POSITIVE,
    default=None,
    help="Episodes per item in a rollout [default: 1 in mode h, 4 when training].",
)
@click.option(
    "--rollout-temperature",
    type=TEMPERATURE,
    default=None,
    help="Temperature forced on rollout calls [default: the harness's in mode h, else 1.0].",
)
@click.option("--lora-rank", type=POSITIVE, default=8, show_default=True, help="Rank of adapters.")
@click.option(
    "--train-processes",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="Data-parallel training workers (torchrun; one GPU each with --train-device cuda).",
)
@click.option(
    "--shard-base",
    is_flag=True,
    help="Shard the frozen base among the training workers (FSDP2), for bases too big for one GPU.",
)
@click.option(
    "--workers",
    default=None,
    help="Remote episode workers (`sia worker`), URLs comma-separated; token in $SIA_WORKER_TOKEN.",
)
@click.option(
    "--gateway-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the gateway binds; with --workers, one they can reach.",
)
@click.option(
    "--train-device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where adapters train (auto: cuda when present).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--policy",
    default="smollm2-135m-instruct",
    show_default=True,
    help="Policy model (see `sia models`).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="hf",
    show_default=True,
    help="hf: the model in process; openai: an OpenAI-compatible endpoint (mode h only); "
    "vllm: vLLM rollouts with live LoRA adapters (GPU).",
)
@click.option(
    "--endpoint",
    default=None,
    help="API root with /v1 (openai); for vllm, running servers' roots, comma-separated "
    "(without it or --vllm-serve, vllm runs in process).",
)
@click.option(
    "--api-key-env",
    default=None,
    help="Environment variable holding the endpoint's key (read, never stored) "
    "[default: OPENAI_API_KEY; VLLM_API_KEY for vllm].",
)
@click.option("--vllm-serve", is_flag=True, help="vllm: start `vllm serve` for the run.")
@click.option("--tensor-parallel-size", type=int, default=1, show_default=True, help="vllm.")
@click.option(
    "--data-parallel-size", type=int, default=1, show_default=True, help="vllm (--vllm-serve)."
)
@click.option("--max-loras", type=int, default=4, show_default=True, help="vllm: per batch.")
@click.option("--max-lora-rank", type=int, default=None, help="vllm [default: fits --lora-rank].")
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True, help="vllm.")
@click.option("--algorithm", default=None, help="Force one RL algorithm for every TRAIN.")
@agent_options
@click.option("--run-id", default=None, help="Name of the run (default: run-<UTC time>).")
@_quiet
@_as_json
@pass_workspace
def run(
    root: Path,
    task: str,
    task_dir: Path | None,
    mode: str,
    iterations: int,
    wall_seconds: float | None,
    tokens: int | None,
    batch_size: int,
    group_size: int | None,
    rollout_temperature: float | None,
    lora_rank: int,
    train_processes: int,
    shard_base: bool,
    workers: str | None,
    gateway_host: str,
    train_device: str,
    seed: int,
    policy: str,
    backend: str,
    endpoint: str | None,
    api_key_env: str | None,
    vllm_serve: bool,
    tensor_parallel_size: int,
    data_parallel_size: int,
    max_loras: int,
    max_lora_rank: int | None,
    gpu_memory_utilization: float,
    algorithm: str | None,
    meta_agent: str,
    feedback_agent: str,
    agent_model: str,
    agent_base_url: str | None,
    agent_api_key_env: str,
    run_id: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Start a run and drive it until its budget is spent.

    \b
    Examples:
        sia run --task arith --mode h --iterations 3 --batch-size 8
        sia run --backend openai --endpoint http://127.0.0.1:8000/v1 --policy my-model
        sia run --backend vllm --vllm-serve --policy ./model-dir --mode w+h
        ANTHROPIC_API_KEY=... sia run --meta-agent claude --feedback-agent claude
        sia run --task-dir ./my-task --mode w --iterations 2
    """
    if run_id is not None:
        validate_run_id(run_id)  # refused before the workspace is touched
    if task_dir is not None:
        task = f"{DIR_PREFIX}{task_dir.expanduser().resolve()}"
    try:
        get_task(task, seed=seed)  # a bad task name or dir is refused before anything is written
    except TaskDirError:
        raise  # the directory's own problem, named with its file: not a usage mistake
    except TaskError as exc:
        raise click.BadParameter(str(exc), param_hint="'--task'") from None
    config = RunConfig(
        task=task,
        mode=mode,
        seed=seed,
        batch_size=batch_size,
        group_size=group_size,
        rollout_temperature=rollout_temperature,
        lora_rank=lora_rank,
        lora_alpha=2 * lora_rank,
        train_processes=train_processes,
        shard_base=shard_base,
        workers=workers,
        gateway_host=gateway_host,
        train_device=train_device,
        policy=policy,
        backend=backend,
        endpoint=endpoint,
        api_key_env=api_key_env,
        vllm_serve=vllm_serve,
        tensor_parallel_size=tensor_parallel_size,
        data_parallel_size=data_parallel_size,
        max_loras=max_loras,
        max_lora_rank=max_lora_rank,
        gpu_memory_utilization=gpu_memory_utilization,
        algorithm=algorithm,
        meta_agent=meta_agent,
        feedback_agent=feedback_agent,
        agent_model=agent_model,
        agent_base_url=agent_base_url,
        agent_api_key_env=agent_api_key_env,
        budget=Budget(iterations=iterations, wall_seconds=wall_seconds, tokens=tokens),
    )
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("run-%Y%m%d-%H%M%S")
    check_supported(config)
    _drive(
        Workspace.create(root),
        config,
        lambda orch: orch.start(run_id, config),
        quiet=quiet,
        as_json=as_json,
    )


@cli.command()
@click.argument("run_id")
@click.option("--at", "at_iteration", type=COUNT, required=True, help="Iteration to branch after.")
@click.option("--name", default=None, help="Name of the new run (default: RUN-at-K).")
@click.option("--mode", type=click.Choice(["h", "w", "w+h"]), default=None, help="New mode.")
@click.option("--iterations", type=COUNT, default=None, help="Iterations the branch may run.")
@click.option("--batch-size", type=POSITIVE, default=None, help="Items per rollout.")
@click.option("--feedback-agent", type=click.Choice(AGENTS), default=None, help="New agent.")
@pass_workspace
def branch(
    root: Path,
    run_id: str,
    at_iteration: int,
    name: str | None,
    mode: str | None,
    iterations: int | None,
    batch_size: int | None,
    feedback_agent: str | None,
) -> None:
    """Start a new run from RUN as it stood after iteration --at; `sia resume` drives it.

    The new run's first event points at RUN's event where that iteration closed; its harness
    branch starts at RUN's best commit at that point and it keeps RUN's best adapter. Mode,
    budget, batch size and Feedback Agent may change; the rest of the config is RUN's.

    \b
    Example:
        sia branch run-20261122-001 --at 2 --name try-training --mode w+h --iterations 3
        sia resume try-training
    """
    ws = Workspace.open(root)
    new = name or f"{run_id}-at-{at_iteration}"
    check_readable(ws)
    with ws.reader() as reader:
        refuse_altered(reader, run_id, "branch")  # a branch would inherit the forgery
    with ws.writer() as recorder:
        parent = RunConfig.from_dict(
            run_state(recorder, run_id).config, source=f"run {run_id}'s stored config"
        )
        budget = parent.budget
        if iterations is not None:
            budget = dataclasses.replace(budget, iterations=iterations)
        changes = {"mode": mode, "batch_size": batch_size, "feedback_agent": feedback_agent}
        changes = {key: value for key, value in changes.items() if value is not None}
        if mode is not None and mode != parent.mode:
            # Groups and rollout temperature follow the mode unless set: resolve them anew.
            changes |= {"group_size": None, "rollout_temperature": None}
        config = dataclasses.replace(parent, budget=budget, **changes)
        check_supported(config)
        orch = Orchestrator(
            recorder=recorder, repo=ws.repo(), artifacts=ws.artifacts(), components=None
        )
        state = orch.branch(run_id, at_iteration, new, config)
    best = state.best
    assert best is not None
    adapter = f", adapter {best.adapter_tag}" if best.adapter_tag else ""
    click.echo(
        f"branched {new} from {run_id} after iteration {at_iteration} (harness "
        f"{best.harness_commit[:12]}{adapter}, val {best.score}); continue with: sia resume {new}"
    )


@cli.command()
@click.argument("run_id")
@_quiet
@_as_json
@pass_workspace
def resume(root: Path, run_id: str, quiet: bool, as_json: bool) -> None:
    """Continue a run after a crash or interrupt, settling half-done effects exactly once.

    \b
    Example:
        sia resume run-20261122-001
    """
    ws = Workspace.open(root)
    with ws.reader() as recorder:
        # First, so an altered record is named by its first bad seq, not by whatever the
        # fold of it trips over.
        refuse_altered(recorder, run_id, "resume")
        config = RunConfig.from_dict(
            run_state(recorder, run_id).config, source=f"run {run_id}'s stored config"
        )
        # Before the model loads: a run that cannot go on should not cost minutes to say so.
        check_resumable(recorder, ws.repo(), ws.artifacts(), run_id)
    _drive(ws, config, lambda orch: orch.resume(run_id), quiet=quiet, as_json=as_json)
