"""Notebook 01's figures: the worst-case weights against the losses and the robust value against the
radius (drawn live by drostudy.toy.explore's explorer), minibatch DRO's gap to the exact optimum
(drostudy.toy.convergence) and the losses under a domain shift (drostudy.toy.domain_shift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from drostudy.plotting import METHOD_COLORS, TEMPLATE, method_color
from drostudy.weights import DIVERGENCES, PENALTIES, penalised_weights, worst_case_weights

RADIUS_LABELS = {d: "radius" for d in DIVERGENCES} | {"cvar": "alpha (tail fraction)"}


def weights_traces(losses: torch.Tensor, divergence: str, radius: float, reg: float) -> dict[str, dict]:
    """x/y of the weights figure's traces, by trace name; penalised weights are empty for tv and cvar."""
    order = torch.argsort(losses)
    sorted_losses = losses[order].numpy()
    worst = worst_case_weights(losses, divergence, radius)[order].numpy()
    if divergence in PENALTIES:
        penalised = penalised_weights(losses, divergence, reg)[order].numpy()
    else:
        penalised = np.array([])
    uniform = np.full(2, 1.0 / len(losses))
    return {
        "worst-case weights": dict(x=sorted_losses, y=worst),
        "penalised weights (reg)": dict(x=sorted_losses[: len(penalised)], y=penalised),
        "uniform 1/n": dict(x=sorted_losses[[0, -1]], y=uniform),
    }


def weights_figure(
    losses: torch.Tensor, divergence: str, radius: float, reg: float, widget: bool = False
) -> go.Figure:
    """Worst-case (and penalised) weights against the losses; a FigureWidget when `widget`."""
    fig = (go.FigureWidget if widget else go.Figure)()
    color = method_color(divergence)
    styles = {
        "worst-case weights": dict(mode="lines+markers", line=dict(color=color, width=3)),
        "penalised weights (reg)": dict(mode="lines", line=dict(color=color, dash="dot", width=2)),
        "uniform 1/n": dict(mode="lines", line=dict(color="#000000", dash="dash", width=1.5)),
    }
    for name, xy in weights_traces(losses, divergence, radius, reg).items():
        fig.add_scatter(name=name, **xy, **styles[name])
    fig.update_layout(template=TEMPLATE, title=_weights_title(divergence, radius, reg, len(losses)))
    fig.update_xaxes(title="per-example loss l_i (nats)")
    fig.update_yaxes(title="weight q_i (sums to 1)")
    return fig


def update_weights_figure(
    fig: go.Figure, losses: torch.Tensor, divergence: str, radius: float, reg: float
) -> None:
    """Redraw the weights figure in place (a FigureWidget updates in the browser)."""
    traces = weights_traces(losses, divergence, radius, reg)
    color = method_color(divergence)
    with fig.batch_update():
        for trace in fig.data:
            trace.x, trace.y = traces[trace.name]["x"], traces[trace.name]["y"]
            if trace.name != "uniform 1/n":
                trace.line.color = color
        fig.layout.title.text = _weights_title(divergence, radius, reg, len(losses))


def _weights_title(divergence: str, radius: float, reg: float, n: int) -> str:
    penalty = f", penalised reg={reg:g}" if divergence in PENALTIES else ""
    return f"worst-case weights: {divergence}, {RADIUS_LABELS[divergence]}={radius:.3g}{penalty}, n={n}"


def sweep_figure(
    sweep: pd.DataFrame, column: str, y_title: str, losses: torch.Tensor | None = None
) -> go.Figure:
    """One panel per divergence: `column` of `radius_sweep` against the radius (mean/max loss if given)."""
    fig = make_subplots(
        rows=1, cols=len(DIVERGENCES), subplot_titles=list(DIVERGENCES), shared_yaxes=True
    )
    for col, (divergence, part) in enumerate(sweep.groupby("divergence", sort=True), start=1):
        line = dict(color=METHOD_COLORS[divergence], width=3)
        fig.add_scatter(
            x=part.radius, y=part[column], name=divergence, line=line, showlegend=False, row=1, col=col
        )
        fig.update_xaxes(title_text=RADIUS_LABELS[divergence], row=1, col=col)
        for name, level, dash in (("mean loss", "mean", "dash"), ("max loss", "max", "dot")):
            if losses is not None:
                fig.add_scatter(
                    x=part.radius.iloc[[0, -1]],
                    y=[float(getattr(losses, level)())] * 2,
                    name=name,
                    mode="lines",
                    line=dict(color="#000000", dash=dash, width=1.5),
                    showlegend=col == 1,
                    row=1,
                    col=col,
                )
    title = {"value": "robust value", "ess": "effective sample size"}.get(column, column)
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(
        template=TEMPLATE, showlegend=losses is not None, height=420, title=f"{title} against the radius"
    )
    return fig


def gap_figure(table: pd.DataFrame, divergence: str, radius: float) -> go.Figure:
    """Gap F(theta_t) - F* of the averaged iterate against the step, one line per batch size (log-log)."""
    fig = go.Figure()
    sizes = sorted(table.batch_size.unique())
    shades = np.linspace(0.35, 1.0, len(sizes))  # darker = larger batch, all in the divergence's colour
    for size, shade in zip(sizes, shades, strict=True):
        part = table[table.batch_size == size]
        fig.add_scatter(
            x=part.step,
            y=part.avg_gap.clip(lower=1e-8),
            name=f"batch {size}",
            mode="lines+markers",
            line=dict(color=method_color(divergence), width=1 + 2.5 * shade),
            opacity=float(shade),
        )
    fig.update_layout(
        template=TEMPLATE,
        title=f"minibatch {divergence} DRO ({RADIUS_LABELS[divergence]} {radius:g}): gap to the exact optimum",
    )
    fig.update_xaxes(title="step (gradient updates)", type="log")
    fig.update_yaxes(title="F(averaged iterate) - F* (nats)", type="log")
    return fig


def floor_figure(gaps: dict[str, dict[int, float]], radius: float) -> go.Figure:
    """Final gap of the averaged iterate against the batch size, one line per divergence (log-log)."""
    fig = go.Figure()
    for divergence, by_size in gaps.items():
        sizes = sorted(by_size)
        fig.add_scatter(
            x=sizes,
            y=[max(by_size[b], 1e-8) for b in sizes],
            name=divergence,
            mode="lines+markers",
            line=dict(color=method_color(divergence), width=3),
        )
    fig.update_layout(
        template=TEMPLATE, title=f"where minibatch DRO stalls (radius {radius:g}; cvar: alpha)"
    )
    fig.update_xaxes(title="batch size (pairs)", type="log")
    fig.update_yaxes(title="final gap F(averaged iterate) - F* (nats)", type="log")
    return fig


def shift_figure(result: dict, divergence: str, radius: float) -> go.Figure:
    """Per-domain test loss of each model, plus the loss under the in-ball shift and the worst domain."""
    colors = {
        "ordinary": METHOD_COLORS["ordinary"],
        "robust": method_color(divergence),
        "group": METHOD_COLORS["group"],
    }
    fig = go.Figure()
    for model, per_domain in result["per_domain"].items():
        values = [*per_domain, result["shifted_loss"][model], result["worst_domain_loss"][model]]
        names = [f"domain {k}" for k in range(len(per_domain))] + ["shifted mix", "worst domain"]
        fig.add_bar(x=names, y=values, name=model, marker_color=colors[model])
    mix = ", ".join(f"{p:.2f}" for p in result["shifted_mix"])
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        title=f"test loss under an in-ball shift ({divergence} {radius:g}): domain mix -> ({mix})",
    )
    fig.update_yaxes(title="Bradley-Terry test loss (nats)")
    return fig
