"""Syntax-highlighted unified diffs as HTML, styled by CSS inlined in the page."""

from __future__ import annotations

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

__all__ = ["DIFF_CLASS", "diff_css", "diff_html"]

#: The CSS class of every highlighted diff block.
DIFF_CLASS = "diff"

_FORMATTER = HtmlFormatter(cssclass=DIFF_CLASS, style="default")

# Whole-line tints make additions and removals readable at a glance, beyond token colour.
_LINE_TINTS = f"""
.{DIFF_CLASS} .gi {{ background: #e6ffec; display: inline-block; width: 100%; }}
.{DIFF_CLASS} .gd {{ background: #ffebe9; display: inline-block; width: 100%; }}
.{DIFF_CLASS} .gu {{ color: #8250df; }}
"""


def diff_css() -> str:
    """The stylesheet for :func:`diff_html` blocks (once per page)."""
    return _FORMATTER.get_style_defs(f".{DIFF_CLASS}") + _LINE_TINTS


def diff_html(patch: str) -> str:
    """``patch`` as a highlighted ``<div class="diff"><pre>…</pre></div>``; text is escaped."""
    return highlight(patch, DiffLexer(), _FORMATTER)
