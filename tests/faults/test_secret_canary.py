"""A policy endpoint that echoes the API key in its errors: the key reaches nothing a run
keeps or shows (events, episode reasons, calls, git, report, exports, CLI output).

The endpoint is real (a gateway around the tiny model); a loopback proxy in front of it
refuses every third request with HTTP 401 and the caller's key in the message, as OpenAI's
API does for a wrong key. Those episodes fail with the redacted message as their reason.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

from sia.cli import cli
from sia.gateway import EpisodeTicket, Gateway
from sia.models.hf_backend import HFPolicy
from sia.models.tiny import build_tiny
from sia.workspace import Workspace
from statemachine import events as ev
from statemachine.replay import envelopes
from tests.faults.accounting import difference
from tests.support.canary import assert_nowhere

KEY_ENV = "SIA_TEST_CANARY_KEY"


class EchoingProxy:
    """Forwards to ``target``; every ``every``-th request gets a 401 echoing its key."""

    def __init__(self, target: str, every: int) -> None:
        self.refused = 0
        counter = itertools.count(1)
        client = httpx2.Client(timeout=60)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                auth = self.headers.get("authorization", "")
                if next(counter) % every == 0:
                    proxy.refused += 1
                    key = auth.partition(" ")[2]
                    message = f"Incorrect API key provided: {key}. Find yours at example."
                    body = json.dumps({"error": {"message": message}}).encode()
                    status = 401
                else:
                    path = target.rstrip("/") + self.path.removeprefix("/v1")
                    answer = client.post(path, content=raw, headers={"authorization": auth})
                    status, body = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._client = client
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[EchoingProxy, str]]:
    model, tokenizer = build_tiny(seed=0)
    ticket = EpisodeTicket("upstream", 0, "any", "-", None, max_calls=10**6, max_tokens=10**8)
    with Gateway(HFPolicy(model, tokenizer)) as upstream:
        key = upstream.register_episode(ticket)
        monkeypatch.setenv(KEY_ENV, key)
        proxy = EchoingProxy(upstream.base_url, every=3)
        try:
            yield proxy, key
        finally:
            proxy.close()


def test_an_endpoint_echoing_the_key_leaves_it_nowhere(tmp_path, faults, endpoint) -> None:
    proxy, key = endpoint
    ws = tmp_path / "ws"
    args = ["-w", str(ws), "run", "--backend", "openai", "--policy", "tiny", "--run-id", "c"]
    args += ["--endpoint", proxy.base_url, "--api-key-env", KEY_ENV]
    args += ["--iterations", "1", "--batch-size", "4", "--json"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    injection = faults.inject(f"policy endpoint echoes the API key ({proxy.refused} refusals)")
    assert proxy.refused > 0
    with Workspace.open(ws).reader() as recorder:
        rows = recorder.read_episodes("c")
        history = list(envelopes(recorder.read("c")))
        report = recorder.verify("c")
    # The echo reached the episodes, redacted: the path under test was taken.
    refused = [r for r in rows if "Incorrect API key provided" in r.reason]
    assert refused and all("[redacted]" in r.reason for r in refused)
    # Each rollout's episodes have one row each, as many as RolloutCompleted counted.
    completed = [e.event for e in history if isinstance(e.event, ev.RolloutCompleted)]
    counted = Counter({rollout.iteration: rollout.episodes for rollout in completed})
    stored = Counter(r.iteration for r in rows if r.purpose == "rollout")
    lost, duplicates = difference(counted.elements(), stored.elements())
    duplicates += len(rows) - len({(r.iteration, r.purpose, r.episode_id) for r in rows})
    injection.account(lost + len(report.problems), duplicates)
    assert (injection.lost, injection.duplicates) == (0, 0)
    assert key not in out.output
    assert_nowhere(key, ws, "c", tmp_path / "outputs")
