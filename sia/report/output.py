"""Write a run's report file: gathered, rendered, then put in place atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sia.report.data import ReportData, gather
from sia.report.html import render
from sia.workspace import Workspace

__all__ = ["default_path", "write_report"]


def default_path(ws: Workspace, run_id: str) -> Path:
    """Where ``sia report`` writes unless told otherwise: ``<workspace>/reports/RUN.html``."""
    return ws.root / "reports" / f"{run_id}.html"


def write_report(ws: Workspace, run_id: str, out: Path | None = None) -> tuple[Path, ReportData]:
    """Gather and render the report of ``run_id`` and write it to ``out``.

    Everything is read and rendered before the file is touched, so an unknown run or a
    failed read writes nothing; the page goes to a temporary file beside ``out`` that is
    renamed over it, so a reader never sees half a report.
    """
    with ws.reader() as recorder:
        data = gather(recorder, ws.repo(), run_id)
    page = render(data)
    path = out if out is not None else default_path(ws, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, data
