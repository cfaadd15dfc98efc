"""The report's plotly figures, each built from :class:`~sia.report.data.ReportData` only.

Each builder returns ``None`` when the run has nothing to plot (no rollout yet, no
adapter trained), so the page says so in words instead of showing an empty chart.
"""

from __future__ import annotations

import html
import textwrap

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from sia.report.data import DecisionRow, ReportData

__all__ = [
    "VERDICT_COLORS",
    "decision_figure",
    "reward_figure",
    "score_figure",
    "training_figure",
    "usage_figure",
]

VERDICT_COLORS = {
    "accepted": "#1a7f37",
    "rejected": "#cf222e",
    "abandoned": "#8c959f",
    "pending": "#0969da",
}
_VERDICT_SYMBOLS = {
    "accepted": "circle",
    "rejected": "x",
    "abandoned": "circle-open",
    "pending": "diamond-open",
}
_DASHES = ("dot", "dash", "dashdot", "longdash")
_PALETTE = ("#0969da", "#bf3989", "#9a6700", "#1a7f37", "#8250df", "#cf222e", "#57606a")
_LAYOUT = dict(
    template="plotly_white",
    height=360,
    margin=dict(l=60, r=20, t=40, b=50),
    legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    hoverlabel=dict(align="left"),
    font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=13),
)


def _hover(text: str, width: int = 80) -> str:
    """Recorded free text made safe for a plotly hover label (which reads a little HTML)."""
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(paragraph, width) or [""])
    return "<br>".join(html.escape(line) for line in lines)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def score_figure(data: ReportData) -> go.Figure | None:
    """Val score per iteration by verdict, the best so far, and the test evaluations."""
    rows = [r for r in data.iterations if r.val_score is not None or r.verdict == "abandoned"]
    if not rows and not data.tests:
        return None
    fig = go.Figure()
    scored = [r for r in rows if r.val_score is not None]
    fig.add_trace(
        go.Scatter(
            x=[r.iteration for r in scored],
            y=[r.val_score for r in scored],
            mode="lines",
            line=dict(color="#d0d7de", width=1.5),
            name="val (every candidate)",
            hoverinfo="skip",
        )
    )
    # The best-so-far line: what the next iteration starts from after each verdict.
    best_x, best_y = [], []
    best = data.run.origin_val
    if data.run.branched_at is not None and best is not None:
        best_x.append(data.run.branched_at)
        best_y.append(best)
        fig.add_trace(
            go.Scatter(
                x=[data.run.branched_at],
                y=[best],
                mode="markers",
                marker=dict(symbol="star", size=14, color="#8250df"),
                name=f"inherited from {data.run.parent_run}",
                hovertemplate="branched after iteration %{x}<br>val %{y:.4g}<extra></extra>",
            )
        )
    for r in data.iterations:
        if r.verdict == "accepted" and r.val_score is not None:
            best = r.val_score
        if best is not None:
            best_x.append(r.iteration)
            best_y.append(best)
    fig.add_trace(
        go.Scatter(
            x=best_x,
            y=best_y,
            mode="lines",
            line=dict(color="#1a7f37", dash="dot", shape="hv"),
            name="best so far",
            hovertemplate="best after iteration %{x}: %{y:.4g}<extra></extra>",
        )
    )
    for verdict, color in VERDICT_COLORS.items():
        group = [r for r in rows if r.verdict == verdict]
        if not group:
            continue
        # An abandoned candidate has no score: it sits on the best line it failed to move.
        ys = [
            r.val_score if r.val_score is not None else _best_before(best_x, best_y, r.iteration)
            for r in group
        ]
        fig.add_trace(
            go.Scatter(
                x=[r.iteration for r in group],
                y=ys,
                mode="markers",
                marker=dict(symbol=_VERDICT_SYMBOLS[verdict], size=12, color=color, line_width=2),
                name=f"val, {verdict}",
                text=[
                    f"iteration {r.iteration}: {r.lever or 'baseline'}"
                    + (f" ({r.algorithm})" if r.algorithm else "")
                    + f"<br>val {_fmt(r.val_score)}, {verdict}"
                    + (f"<br>Δ {r.delta:+.4g}" if r.delta is not None else "")
                    for r in group
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    if data.tests:
        fig.add_trace(
            go.Scatter(
                x=[t.iteration for t in data.tests],
                y=[t.score for t in data.tests],
                mode="markers",
                marker=dict(symbol="diamond", size=13, color="#bf3989"),
                name="test",
                text=[f"seq {t.seq}, adapter {t.adapter_tag or 'none'}" for t in data.tests],
                hovertemplate="test after iteration %{x}: %{y:.4g}<br>%{text}<extra></extra>",
            )
        )
    fig.update_layout(**_LAYOUT, xaxis_title="iteration", yaxis_title="score")
    fig.update_xaxes(dtick=1)
    return fig


def _best_before(xs: list[int], ys: list[float], iteration: int) -> float | None:
    before = [y for x, y in zip(xs, ys, strict=True) if x < iteration]
    return before[-1] if before else None


def decision_figure(data: ReportData) -> go.Figure | None:
    """Each decision at its iteration, by lever, coloured by what became of it."""
    if not data.decisions:
        return None
    fig = go.Figure()
    for verdict, color in VERDICT_COLORS.items():
        group = [d for d in data.decisions if d.verdict == verdict]
        if not group:
            continue
        fig.add_trace(
            go.Scatter(
                x=[d.iteration for d in group],
                y=[d.lever for d in group],
                mode="markers+text",
                marker=dict(symbol=_VERDICT_SYMBOLS[verdict], size=16, color=color, line_width=2),
                text=[d.algorithm or "" for d in group],
                textposition="middle right",
                name=verdict,
                hovertext=[_decision_hover(d) for d in group],
                hoverinfo="text",
            )
        )
    fig.update_layout(**{**_LAYOUT, "height": 260}, xaxis_title="iteration", yaxis_title="lever")
    fig.update_xaxes(dtick=1)
    levers = sorted({d.lever for d in data.decisions}, key=lambda lever: (lever != "edit", lever))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=levers)
    return fig


def _decision_hover(d: DecisionRow) -> str:
    parts = [
        f"<b>iteration {d.iteration}: {d.lever}</b>"
        + (f" with {html.escape(d.algorithm)}" if d.algorithm else "")
        + f" by {html.escape(d.agent)}",
        _hover(d.rationale),
    ]
    if d.algorithm_reason:
        parts.append("why this algorithm: " + _hover(d.algorithm_reason))
    if d.expected_effect:
        parts.append("expected: " + _hover(d.expected_effect))
    outcome = f"outcome: {d.verdict}"
    if d.delta is not None:
        outcome += f", val Δ {d.delta:+.4g}"
    if d.abandoned:
        outcome += ": " + _hover(d.abandoned)
    parts.append(outcome)
    return "<br>".join(parts)


def reward_figure(data: ReportData) -> go.Figure | None:
    """The reward of every rollout episode, one box (with its points) per iteration."""
    samples = [s for s in data.rewards if s.rewards]
    if not samples:
        return None
    fig = go.Figure()
    for s in samples:
        fig.add_trace(
            go.Box(
                y=s.rewards,
                name=f"iteration {s.iteration}",
                boxpoints="all",
                jitter=0.5,
                pointpos=0,
                boxmean=True,
                marker=dict(color="#0969da", size=5, opacity=0.6),
                line=dict(color="#57606a"),
                fillcolor="rgba(9,105,218,0.08)",
                hoverinfo="y",
            )
        )
    fig.update_layout(**_LAYOUT, showlegend=False, yaxis_title="episode reward")
    return fig


def training_figure(data: ReportData) -> go.Figure | None:
    """Loss and grad norm per step for each adapter, and any per-step algorithm stats."""
    curves = [c for c in data.training if c.loss or c.grad_norm or c.stats]
    if not curves:
        return None
    # One dash style per stat name, the same for every adapter, named in the panel title
    # (the legend lists adapters, by colour).
    names = sorted({name for c in curves for name in c.stats})
    dashes = dict(zip(names, _DASHES * (len(names) // len(_DASHES) + 1), strict=False))
    stats_title = ", ".join(f"{name} ({dashes[name]})" for name in names)
    titles = ["loss", "grad norm"] + ([stats_title] if names else [])
    fig = make_subplots(rows=1, cols=len(titles), subplot_titles=titles)
    for index, curve in enumerate(curves):
        color = _PALETTE[index % len(_PALETTE)]
        name = f"{curve.tag} ({curve.algorithm})"
        for col, values in ((1, curve.loss), (2, curve.grad_norm)):
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(values) + 1)),
                    y=values,
                    mode="lines+markers",
                    marker_size=4,
                    line=dict(color=color),
                    name=name,
                    legendgroup=curve.tag,
                    showlegend=col == 1,
                    hovertemplate=f"{html.escape(curve.tag)}<br>"
                    "step %{x}: %{y:.4g}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        for stat, values in curve.stats.items():
            fig.add_trace(
                go.Scatter(
                    x=list(range(1, len(values) + 1)),
                    y=values,
                    mode="lines",
                    line=dict(color=color, dash=dashes[stat]),
                    name=f"{curve.tag} {stat}",
                    legendgroup=curve.tag,
                    showlegend=False,
                    hovertemplate=f"{html.escape(curve.tag)} {html.escape(stat)}<br>"
                    "step %{x}: %{y:.4g}<extra></extra>",
                ),
                row=1,
                col=3,
            )
    # The legend goes above the panel titles, not onto them.
    fig.update_layout(
        **{
            **_LAYOUT,
            "margin": {**_LAYOUT["margin"], "t": 80},
            "legend": {**_LAYOUT["legend"], "y": 1.18},
        }
    )
    fig.update_xaxes(title_text="step")
    return fig


def usage_figure(data: ReportData) -> go.Figure | None:
    """Tokens per phase, stacked by who spent them: the policy model or an agent."""
    if not data.usage:
        return None
    phases = [u.phase for u in data.usage]
    fig = go.Figure()
    for label, attr, color in (
        ("policy prompt", "prompt_tokens", "#0969da"),
        ("policy completion", "completion_tokens", "#54aeff"),
        ("agent input", "agent_input_tokens", "#bf3989"),
        ("agent output", "agent_output_tokens", "#ff80c8"),
    ):
        values = [getattr(u, attr) for u in data.usage]
        if any(values):
            fig.add_trace(
                go.Bar(
                    x=phases,
                    y=values,
                    name=label,
                    marker_color=color,
                    hovertemplate=f"{label}<br>%{{x}}: %{{y:,}} tokens<extra></extra>",
                )
            )
    fig.update_layout(**_LAYOUT, barmode="stack", yaxis_title="tokens")
    return fig
