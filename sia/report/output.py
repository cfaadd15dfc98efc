"""Write a run's report file: gathered, rendered, then put in place atomically."""

from __future__ import annotations

from pathlib import Path

from sia.files import write_atomic
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
    write_atomic(path, page)
    return path, data
