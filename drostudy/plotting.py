"""Figures for every notebook: one look (the drostudy template), one colour per method, and the charts
the notebooks share (grouped bars and lines with 95% intervals, lines against the radius).

Writing them (offline HTML + PNG, the figures' README) is drostudy.figure_files; `save_figure` and
`figures_dir` are re-exported here, so a notebook imports its figure tools from one module.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from drostudy.figure_files import figures_dir, save_figure  # noqa: F401 (re-exported: see above)

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
OKABE_ITO = (
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#CC79A7",  # reddish purple
    "#0072B2",  # blue
    "#F0E442",  # yellow (weak on white: used last)
    "#000000",  # black
)
# One colour per method in every notebook: the ordinary (non-robust) baseline is always black, each
# divergence keeps its colour whether it appears as a ball, a penalty or a training method. Peers reuse
# the palette's remaining colours plus grey.
METHOD_COLORS = {
    "ordinary": "#000000",
    "tv": "#E69F00",
    "kl": "#56B4E9",
    "chi2": "#009E73",
    "cvar": "#D55E00",
    "group": "#CC79A7",
    "group_eg": "#CC79A7",
    "dr_dpo": "#0072B2",
    "kldpo": "#F0E442",
    "wdpo": "#999999",
    "rdpo": "#7F7F7F",
}
# Peers that share a hue with another method are told apart by the line dash.
METHOD_DASH = {"rdpo": "dash", "kldpo": "dashdot", "group_eg": "dot"}

FONT_SIZE = 15

pio.templates["drostudy"] = go.layout.Template(
    layout=dict(
        font=dict(size=FONT_SIZE, family="DejaVu Sans, Arial, sans-serif"),
        title=dict(font=dict(size=FONT_SIZE + 3), x=0.02, xanchor="left"),
        colorway=list(OKABE_ITO),
        legend=dict(font=dict(size=FONT_SIZE - 1)),
        margin=dict(l=70, r=30, t=70, b=60),
    )
)
TEMPLATE = "plotly_white+drostudy"


def set_theme() -> None:
    """Make the drostudy template the default for every plotly figure made afterwards."""
    pio.templates.default = TEMPLATE


def method_color(method: str) -> str:
    """The fixed colour of `method` (a divergence or a training method), e.g. "tv" -> orange."""
    key = _method_key(method)
    if key not in METHOD_COLORS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHOD_COLORS)}")
    return METHOD_COLORS[key]


def color_map(values: Sequence[str]) -> dict[str, str]:
    """Colours for the distinct `values`: the method colours when all are methods; otherwise the ordinary
    baseline keeps its black and every other value takes the next Okabe-Ito colour (black skipped)."""
    distinct = list(dict.fromkeys(str(v) for v in values))
    if all(_method_key(v) in METHOD_COLORS for v in distinct):
        return {v: method_color(v) for v in distinct}
    baseline = METHOD_COLORS["ordinary"]
    cycle = [c for c in OKABE_ITO if c != baseline]
    others = [v for v in distinct if _method_key(v) != "ordinary"]
    colors = {v: cycle[i % len(cycle)] for i, v in enumerate(others)}
    return {v: colors.get(v, baseline) for v in distinct}


def _method_key(value: str) -> str:
    return value.lower().replace("-", "_").replace(" ", "_")


def interval_error(mean: pd.Series, low: pd.Series, high: pd.Series) -> dict:
    """plotly's `error_y` for an interval [low, high] around `mean` (asymmetric, in data units)."""
    return dict(
        type="data",
        symmetric=False,
        array=(high - mean).tolist(),
        arrayminus=(mean - low).tolist(),
    )


def add_gain_line(fig: go.Figure, part: pd.DataFrame, x: str, name: str, color: str, **scatter) -> None:
    """Add to `fig` a line of paired gains `part.mean_diff` against `part[x]` with their 95% intervals
    (columns ci_low, ci_high) as error bars; `scatter` passes on to add_scatter (row, col, legendgroup...)."""
    error = interval_error(part.mean_diff, part.ci_low, part.ci_high)
    fig.add_scatter(
        x=part[x],
        y=part.mean_diff,
        error_y=error,
        mode="lines+markers",
        name=name,
        line=dict(color=color),
        **scatter,
    )


def bar_with_ci(
    df: pd.DataFrame,
    x: str,
    y: str,
    color: str | None = None,
    ci_low: str | None = None,
    ci_high: str | None = None,
    title: str | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
) -> go.Figure:
    """Grouped bars of `y` per `x` (one bar group per `color` value), error bars from [ci_low, ci_high].

    `df` is tidy: one row per bar. Colours follow METHOD_COLORS when `color` holds method names.
    """
    for col in (x, y, color, ci_low, ci_high):
        if col is not None and col not in df.columns:
            raise ValueError(f"column {col!r} not in df; expected one of {list(df.columns)}")
    fig = go.Figure()
    groups = [(None, df)] if color is None else list(df.groupby(color, sort=False))
    colors = color_map([g for g, _ in groups]) if color is not None else {}
    for key, part in groups:
        error = None
        if ci_low is not None and ci_high is not None:
            error = interval_error(part[y], part[ci_low], part[ci_high])
        name = None if key is None else str(key)
        fig.add_bar(
            x=part[x], y=part[y], name=name, error_y=error, marker_color=colors.get(name, OKABE_ITO[0])
        )
    fig.update_layout(template=TEMPLATE, barmode="group", title=title, showlegend=color is not None)
    fig.update_xaxes(title=x_title or x)
    fig.update_yaxes(title=y_title or y)
    return fig


def line_vs_radius(
    df: pd.DataFrame,
    y: str,
    method: str = "divergence",
    radius: str = "radius",
    title: str | None = None,
    y_title: str | None = None,
    x_title: str = "radius (ball size; for cvar the tail fraction alpha)",
    log_y: bool = False,
) -> go.Figure:
    """One line of `y` against `radius` per `method`, in the method's fixed colour and dash."""
    for col in (y, method, radius):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in df; expected one of {list(df.columns)}")
    fig = go.Figure()
    colors = color_map(df[method].unique())
    for key, part in df.groupby(method, sort=False):
        part = part.sort_values(radius)
        line = dict(color=colors[str(key)], dash=METHOD_DASH.get(str(key), "solid"), width=2.5)
        fig.add_scatter(x=part[radius], y=part[y], mode="lines+markers", name=str(key), line=line)
    fig.update_layout(template=TEMPLATE, title=title)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title or y, type="log" if log_y else "linear")
    return fig
