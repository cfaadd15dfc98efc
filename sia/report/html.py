"""One self-contained HTML page from :class:`~sia.report.data.ReportData`.

The page needs no network: plotly's JavaScript (shipped in the plotly wheel) is inlined
once in the head, the styles are inline, and the report's data is embedded as a JSON block
(``<script type="application/json" id="sia-report-data">``) so the numbers on the page can
be checked, or reused, without the ledger.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

import plotly.io as pio
from plotly.graph_objects import Figure
from plotly.offline import get_plotlyjs

from sia.report.data import ReportData
from sia.report.figures import (
    VERDICT_COLORS,
    decision_figure,
    reward_figure,
    score_figure,
    training_figure,
    usage_figure,
)
from sia.report.highlight import diff_css, diff_html
from sia.report.tree import RunNode

__all__ = ["DATA_ELEMENT_ID", "render"]

#: The id of the ``<script type="application/json">`` element holding the report's data.
DATA_ELEMENT_ID = "sia-report-data"

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}

_CSS = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; }
header { padding: 20px 32px 12px; border-bottom: 1px solid var(--line); background: var(--bg); }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .sub { color: var(--muted); }
nav { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px 16px; }
nav a { color: #0969da; text-decoration: none; }
main { padding: 8px 32px 48px; max-width: 1400px; }
section { margin-top: 28px; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 120px;
  background: #fff; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 18px; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin-top: 10px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { white-space: pre-wrap; max-width: 520px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12px; }
.verdict { font-weight: 600; }
.empty { color: var(--muted); font-style: italic; }
details.edit { border: 1px solid var(--line); border-radius: 6px; margin: 10px 0; }
details.edit > summary { padding: 6px 10px; background: var(--bg); cursor: pointer; }
details.edit .meta { padding: 4px 10px; color: var(--muted); }
.diff { margin: 0; overflow-x: auto; }
.diff pre { margin: 0; padding: 8px 10px; font-size: 12px; line-height: 1.45; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 22px; }
ul.tree { padding-left: 0; }
ul.tree li { position: relative; padding: 3px 0 3px 14px; }
ul.tree ul li::before { content: ""; position: absolute; left: -8px; top: 0; bottom: 0;
  border-left: 1px solid #8c959f; }
ul.tree ul li::after { content: ""; position: absolute; left: -8px; top: 14px; width: 16px;
  border-top: 1px solid #8c959f; }
ul.tree ul li:last-child::before { bottom: auto; height: 14px; }
.node { border: 1px solid var(--line); border-radius: 4px; padding: 1px 8px;
  display: inline-block; }
.node.current { border-color: #0969da; background: #ddf4ff; font-weight: 600; }
.plot { width: 100%; }
"""


def render(data: ReportData) -> str:
    """The whole page as one string."""
    run = data.run
    figures = {
        "scores": score_figure(data),
        "decisions": decision_figure(data),
        "rewards": reward_figure(data),
        "training": training_figure(data),
        "usage": usage_figure(data),
    }
    sections = [
        _section(
            "scores",
            "Score per iteration",
            _plot("scores", figures["scores"], "No candidate has been evaluated yet.")
            + _iteration_table(data),
        ),
        _section(
            "decisions",
            "Decision timeline",
            _plot("decisions", figures["decisions"], "No decision has been made yet.")
            + _decision_table(data),
        ),
        _section(
            "rewards",
            "Rollout rewards",
            _plot("rewards", figures["rewards"], "No rollout episode is recorded.")
            + _reward_table(data),
        ),
        _section(
            "training",
            "Training curves",
            _plot("training", figures["training"], "No adapter with per-step metrics.")
            + _training_table(data),
        ),
        _section("edits", "Harness edits", _edits(data)),
        _section("tree", "Runs and branches", _tree(data.tree, run.run_id)),
        _section(
            "usage",
            "Tokens and cost per phase",
            _plot("usage", figures["usage"], "No model or agent call is recorded.")
            + _usage_table(data),
        ),
    ]
    nav = "".join(
        f'<a href="#{sid}">{escape(title)}</a>'
        for sid, title in (
            ("scores", "Scores"),
            ("decisions", "Decisions"),
            ("rewards", "Rewards"),
            ("training", "Training"),
            ("edits", "Harness edits"),
            ("tree", "Branches"),
            ("usage", "Tokens and cost"),
        )
    )
    # "<" escaped inside the JSON keeps a "</script>" in recorded text from ending the block.
    payload = json.dumps(data.to_dict(), sort_keys=True, allow_nan=False).replace("<", "\\u003c")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>SIA report: {escape(run.run_id)}</title>"
        f"<style>{_CSS}{diff_css()}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script>'
        "</head><body>"
        f"<header><h1>Run {escape(run.run_id)}</h1>"
        f'<div class="sub">{escape(_subtitle(data))}</div>{_cards(data)}<nav>{nav}</nav></header>'
        f"<main>{''.join(sections)}</main>"
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{payload}</script>'
        "</body></html>\n"
    )


# ── pieces ─────────────────────────────────────────────────────────────────────────────


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(sha: str | None) -> str:
    return "—" if not sha else sha[:10]


def _verdict(verdict: str) -> str:
    color = VERDICT_COLORS.get(verdict, "#1f2328")
    return f'<span class="verdict" style="color:{color}">{escape(verdict)}</span>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>{body}</section>'


def _plot(sid: str, fig: Figure | None, empty: str) -> str:
    if fig is None:
        return f'<p class="empty">{escape(empty)}</p>'
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,  # inlined once in the head
        div_id=f"plot-{sid}",
        config=_PLOT_CONFIG,
        default_width="100%",
        default_height=f"{fig.layout.height or 360}px",
    )


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _td(text: Any, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{escape(str(text))}</td>"


def _subtitle(data: ReportData) -> str:
    run = data.run
    parts = [f"task {run.task}", f"mode {run.mode}", f"seed {run.seed}", run.status]
    if run.finish_reason:
        parts.append(run.finish_reason)
    if run.error:
        parts.append(f"error: {run.error}")
    if run.parent_run:
        parts.append(
            f"branched from {run.parent_run} after iteration {run.branched_at} "
            f"(seq {run.parent_seq})"
        )
    parts.append(f"{_when(run.started_ts)} → {_when(run.last_ts)}")
    return " · ".join(parts)


def _cards(data: ReportData) -> str:
    run = data.run
    cost = [u.cost_usd for u in data.usage if u.cost_usd is not None]
    cards = [
        ("best val", _num(run.best_val)),
        ("best iteration", "—" if run.best_iteration is None else str(run.best_iteration)),
        ("test", _num(run.test_score)),
        ("iterations", str(len(data.iterations))),
        ("events", str(run.events)),
        ("tokens", f"{sum(u.tokens for u in data.usage):,}"),
        ("agent cost", f"${sum(cost):.4f}" if cost else "—"),
    ]
    inner = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in cards
    )
    return f'<div class="cards">{inner}</div>'


def _iteration_table(data: ReportData) -> str:
    rows = [
        [
            _td(r.iteration, "num"),
            _td(r.lever or "baseline"),
            _td(r.algorithm or "—"),
            f'<td class="mono">{escape(_short(r.harness_commit))}</td>',
            _td(r.adapter_tag or "—"),
            _td(_num(r.rollout_mean_reward), "num"),
            _td(_num(r.val_score), "num"),
            f"<td>{_verdict(r.verdict)}</td>",
            _td("—" if r.delta is None else f"{r.delta:+.3f}", "num"),
        ]
        for r in data.iterations
    ]
    headers = ["iter", "lever", "algorithm", "commit", "adapter", "rollout reward", "val"]
    return _table([*headers, "verdict", "Δ val"], rows, "iterations")


def _decision_table(data: ReportData) -> str:
    if not data.decisions:
        return ""
    rows = []
    for d in data.decisions:
        why = d.rationale
        if d.algorithm_reason:
            why += f"\n\nAlgorithm: {d.algorithm_reason}"
        if d.expected_effect:
            why += f"\n\nExpected: {d.expected_effect}"
        if d.abandoned:
            why += f"\n\nAbandoned: {d.abandoned}"
        rows.append(
            [
                _td(d.iteration, "num"),
                _td(_when(d.ts)),
                _td(d.lever),
                _td(d.algorithm or "—"),
                _td(d.agent),
                _td(", ".join(d.rules) or "—"),
                _td(why, "text"),
                f'<td class="mono">{escape(d.produced or "—")}</td>',
                f"<td>{_verdict(d.verdict)}</td>",
                _td("—" if d.delta is None else f"{d.delta:+.3f}", "num"),
                _td(d.rejected_patches, "num"),
            ]
        )
    headers = ["iter", "time", "lever", "algorithm", "agent", "rules", "rationale", "produced"]
    return _table([*headers, "outcome", "Δ val", "rejected patches"], rows, "timeline")


def _reward_table(data: ReportData) -> str:
    if not data.rewards:
        return ""
    rows = [
        [
            _td(s.iteration, "num"),
            _td(s.episodes, "num"),
            _td(s.unscored, "num"),
            _td(_num(s.mean), "num"),
            _td(_num(min(s.rewards) if s.rewards else None), "num"),
            _td(_num(max(s.rewards) if s.rewards else None), "num"),
            _td(", ".join(f"{k} {v}" for k, v in s.statuses.items())),
        ]
        for s in data.rewards
    ]
    headers = ["iter", "episodes", "no reward", "mean", "min", "max", "statuses"]
    return _table(headers, rows, "rewards")


def _training_table(data: ReportData) -> str:
    if not data.training:
        return ""
    rows = []
    for c in data.training:
        summary = ", ".join(f"{k}={_short_value(v)}" for k, v in c.summary.items())
        rows.append(
            [
                _td(c.iteration, "num"),
                _td(c.tag),
                _td(c.algorithm),
                _td(len(c.loss), "num"),
                _td(_num(_last(c.loss), 4), "num"),
                f'<td class="mono">{escape(c.sha256[:12])}</td>',
                _td(summary or "—", "text"),
            ]
        )
    headers = ["iter", "adapter", "algorithm", "steps", "final loss", "sha256", "metrics"]
    return _table(headers, rows, "training")


def _last(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return present[-1] if present else None


def _short_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _edits(data: ReportData) -> str:
    if not data.edits:
        return '<p class="empty">This run made no harness edit.</p>'
    blocks = []
    for e in data.edits:
        body = (
            f'<p class="empty">{escape(e.error)}</p>'
            if e.error
            else diff_html(e.patch)
            if e.patch
            else '<p class="empty">The commit changed no file.</p>'
        )
        files = ", ".join(e.files) or "—"
        adopted = " · adopted after a crash" if e.adopted else ""
        blocks.append(
            f'<details class="edit" open id="edit-{e.iteration}">'
            f"<summary>iteration {e.iteration} · {_verdict(e.verdict)} · "
            f"{escape(e.summary)}</summary>"
            f'<div class="meta"><code>{escape(e.parent[:10])}</code> → '
            f"<code>{escape(e.commit[:10])}</code> · seq {e.seq} · "
            f"{escape(files)}{adopted}</div>{body}</details>"
        )
    return "".join(blocks)


def _tree(nodes: list[RunNode], current: str) -> str:
    if not nodes:
        return ""
    return f'<ul class="tree">{"".join(_tree_node(n, current) for n in nodes)}</ul>'


def _tree_node(node: RunNode, current: str) -> str:
    cls = "node current" if node.run_id == current else "node"
    where = ""
    if node.parent:
        where = f" · from {node.parent} after iteration {node.at_iteration} (seq {node.parent_seq})"
    text = (
        f"{node.run_id} · mode {node.mode} · {node.status} at iteration {node.iteration}"
        f" · best val {_num(node.best_val)}{where}"
    )
    children = _tree(node.branches, current).replace('<ul class="tree">', "<ul>", 1)
    label = f'<span class="{cls}">{escape(text)}</span>'
    return f'<li data-run="{escape(node.run_id)}">{label}{children}</li>'


def _usage_table(data: ReportData) -> str:
    if not data.usage:
        return ""
    rows = [
        [
            _td(u.phase),
            _td(u.policy_calls, "num"),
            _td(f"{u.prompt_tokens:,}", "num"),
            _td(f"{u.completion_tokens:,}", "num"),
            _td(u.agent_calls, "num"),
            _td(f"{u.agent_input_tokens:,}", "num"),
            _td(f"{u.agent_output_tokens:,}", "num"),
            _td(f"{u.agent_cache_read_tokens:,} / {u.agent_cache_write_tokens:,}", "num"),
            _td("—" if u.cost_usd is None else f"${u.cost_usd:.4f}", "num"),
            _td(u.unpriced_calls, "num"),
            _td(", ".join(u.models) or "—"),
        ]
        for u in data.usage
    ]
    headers = ["phase", "policy calls", "prompt tokens", "completion tokens", "agent calls"]
    headers += ["agent input", "agent output", "cache read / write", "cost", "unpriced", "models"]
    return _table(headers, rows, "usage")
