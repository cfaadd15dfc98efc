"""``sia report``: one self-contained HTML page of a run, every number read from the ledger.

:func:`gather` reads the run into :class:`ReportData` (plain dataclasses), :func:`render`
turns that into the page, and :func:`write_report` does both and writes the file.
"""

from sia.report.data import ReportData, gather
from sia.report.html import DATA_ELEMENT_ID, render
from sia.report.output import default_path, write_report

__all__ = ["DATA_ELEMENT_ID", "ReportData", "default_path", "gather", "render", "write_report"]
