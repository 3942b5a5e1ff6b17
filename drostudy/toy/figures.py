"""Notebook 01's static figures of the toy models: minibatch DRO's gap to the exact optimum
(drostudy.toy.convergence) and the losses under a domain shift (drostudy.toy.domain_shift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from drostudy.plotting import METHOD_COLORS, TEMPLATE, method_color
from drostudy.weights import DIVERGENCES

RADIUS_LABELS = {d: "radius" for d in DIVERGENCES} | {"cvar": "alpha (tail fraction)"}


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
        "group_robust": METHOD_COLORS["group"],
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
