"""The harness runner: rollouts and evaluations of harness programs in sandboxed processes."""

from sia.runner.errors import RunnerError
from sia.runner.metrics import EpisodeOutcome, summarise
from sia.runner.runner import EpisodeBudget, HarnessRunner, RunnerTask, build_job
from sia.runner.sandbox import EpisodeLimits, ProcessOutcome, episode_env, run_episode_process

__all__ = [
    "EpisodeBudget",
    "EpisodeLimits",
    "EpisodeOutcome",
    "HarnessRunner",
    "ProcessOutcome",
    "RunnerError",
    "RunnerTask",
    "build_job",
    "episode_env",
    "run_episode_process",
    "summarise",
]
