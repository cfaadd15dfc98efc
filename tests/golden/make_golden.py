"""Regenerate the golden history: ``python -m tests.golden.make_golden``.

Runs the scripted w+h run on a fresh workspace with a stepping clock and writes its stored
events (hashes included) as JSONL and its timeline as JSON. Only regenerate on purpose: the
golden files pin the event schema, the fold and the hash chain.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from sia.workspace import Workspace
from statemachine.replay import replay, timeline
from tests.support.run_scripted import config, orchestrator

HERE = Path(__file__).parent
EVENTS = HERE / "scripted-wh.events.jsonl"
TIMELINE = HERE / "scripted-wh.timeline.json"


def record_run(root: Path):
    ws = Workspace.create(root)
    with ws.writer() as rec:
        orchestrator(ws, rec, "w+h").start("golden", config("w+h", 4))
        return rec.read("golden")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        records = record_run(Path(tmp) / "ws")
    EVENTS.write_text(
        "".join(json.dumps(dataclasses.asdict(r), sort_keys=True) + "\n" for r in records)
    )
    TIMELINE.write_text(
        json.dumps(timeline(replay("golden", records)), indent=2, sort_keys=True) + "\n"
    )


if __name__ == "__main__":
    main()
