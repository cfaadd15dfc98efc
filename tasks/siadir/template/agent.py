"""Harness for a SIA-format task: the task's target agent, run on one item against the gateway.

Entry point: ``solve(client, item, config) -> str``.

- ``item``: ``{"id", "question", "files"}``; ``files`` maps paths to the text of the task's
  public data restricted to this item (``task.md``, the items file with one entry, …).
- ``config``: ``harness.json``: ``entry`` (the target agent script in this folder),
  ``key_env`` (environment variables the script reads its API key from) and ``model``
  (when set, every request asks for this model name instead of the script's own).

The files are written to ``./dataset`` and the script runs as ``__main__`` with
``--dataset_dir ./dataset --working_dir ./work``, in this process. Every OpenAI client it
builds is pointed at the gateway whatever ``base_url`` and key it names, so its model calls
reach the policy model and are recorded. The answer is what the script wrote to ``./work``,
as JSON ``{"files": {path: text}}``; the task's evaluator scores it.
"""

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

__all__ = ["solve"]

_MAX_OUTPUT_BYTES = 4 << 20


def _redirect_openai(client: Any, model: str | None) -> None:
    import openai

    base_url, api_key = str(client.base_url), client.api_key
    for cls in (openai.OpenAI, openai.AsyncOpenAI):
        original = cls.__init__

        def init(self, *args, _original=original, **kwargs):
            kwargs.update(base_url=base_url, api_key=api_key)
            _original(self, *args, **kwargs)

        cls.__init__ = init
    if model:
        from openai.resources.chat.completions import AsyncCompletions, Completions

        for cls in (Completions, AsyncCompletions):
            create = cls.create

            def forced(self, *args, _create=create, **kwargs):
                kwargs["model"] = model
                return _create(self, *args, **kwargs)

            cls.create = forced


def _write_dataset(root: Path, files: dict) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _collect(root: Path) -> dict:
    found, size = {}, 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        size += len(data)
        if size > _MAX_OUTPUT_BYTES:
            raise RuntimeError(f"the target agent wrote over {_MAX_OUTPUT_BYTES >> 20} MB")
        try:
            found[path.relative_to(root).as_posix()] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary side files (caches, plots) are not part of a submission
    return found


def solve(client: Any, item: dict, config: dict) -> str:
    """Run the target agent on this item; the files it wrote, as JSON."""
    here = Path(__file__).resolve().parent
    dataset, work = Path("dataset").resolve(), Path("work").resolve()
    _write_dataset(dataset, item["files"])
    work.mkdir(exist_ok=True)
    for name in config.get("key_env", []):
        os.environ[name] = client.api_key
    _redirect_openai(client, config.get("model"))
    script = here / config.get("entry", "target_agent.py")
    argv = sys.argv
    sys.argv = [str(script), "--dataset_dir", str(dataset), "--working_dir", str(work)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise RuntimeError(f"the target agent exited with {stop.code!r}") from None
    finally:
        sys.argv = argv
    return json.dumps({"files": _collect(work)}, ensure_ascii=False)
