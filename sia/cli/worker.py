"""``sia worker``: run harness episodes for a run on another machine."""

from __future__ import annotations

import os
import signal
import threading

import click

from sia.cli.main import cli

__all__ = ["worker"]


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9100, show_default=True, help="Port to listen on.")
@click.option(
    "--max-episodes", type=int, default=4, show_default=True, help="Episodes run at once."
)
@click.option(
    "--token-env",
    default="SIA_WORKER_TOKEN",
    show_default=True,
    help="Environment variable holding the token runs must present.",
)
def worker(host: str, port: int, max_episodes: int, token_env: str) -> None:
    """Serve episodes to `sia run --workers` until Ctrl-C or SIGTERM.

    Each episode runs here in the same sandbox as a local one; its model calls go to this
    worker's loopback relay, which forwards them to the run's gateway, so the run records
    every call in its own ledger. Use on a trusted network: the token travels in clear.

    \b
    Example:
        SIA_WORKER_TOKEN=s3cret sia worker --host 10.0.0.7 --port 9100
        SIA_WORKER_TOKEN=s3cret sia run --workers http://10.0.0.7:9100 --gateway-host 10.0.0.1
    """
    from sia.runner.remote import EpisodeWorker

    token = os.environ.get(token_env)
    if not token:
        raise click.ClickException(f"set the workers' shared token in ${token_env}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with EpisodeWorker(token, host=host, port=port, max_episodes=max_episodes) as served:
        click.echo(f"serving episodes at {served.start()} (Ctrl-C stops)")
        stop.wait()
    click.echo(f"stopped after {served.episodes_served} episodes")
