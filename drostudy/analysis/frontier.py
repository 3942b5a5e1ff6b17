"""Frontiers: in-distribution quality against out-of-distribution quality (or OOD quality against KL), one
curve per knob, so a reader sees whether a robust ball's radius curve lies above ordinary training's own
regularisation curve (beta, weight decay, steps) or only slides along it (drostudy.analysis.matched gives
the matched differences; this module gives the picture).

A curve is a mapping setting -> knob value, e.g. {"ordinary": 0.1, "ordinary beta 0.4": 0.4} for ordinary
training's beta or {"ordinary": 0.0, "tv 0.1": 0.1, "tv 0.2": 0.2} for the TV radius; a point is the mean
over seeds of a setting's x and y. Its error bars are the paired 95% t-intervals of its difference to the
baseline on the same seeds (placed around the setting's mean): the uncertainty a paired comparison has,
not the seed spread, which is mostly shared by every setting. The baseline itself has none.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from drostudy.analysis.paired import paired_comparison
from drostudy.analysis.stats import check_results
from drostudy.plotting import OKABE_ITO, TEMPLATE, interval_error

POINT_COLUMNS = (
    "stage",
    "curve",
    "setting",
    "knob",
    "n_seeds",
    "x_mean",
    "x_low",
    "x_high",
    "y_mean",
    "y_low",
    "y_high",
)


def frontier_points(
    results: pd.DataFrame,
    curves: Mapping[str, Mapping[str, float]],
    x: tuple[str, str] = ("accuracy", "id"),
    y: tuple[str, str] = ("accuracy", "ood"),
    domain: str = "mean",
    baseline: str = "ordinary",
) -> pd.DataFrame:
    """Every curve's points per stage, sorted by knob: POINT_COLUMNS.

    results: the long table (drostudy.analysis.stats.RESULT_COLUMNS). curves: curve name -> {setting: knob
    value}. x, y: the (metric, split) on each axis, read on `domain`. n_seeds: the seeds the setting shares
    with `baseline`; x_mean, y_mean: the setting's means over them; *_low, *_high: those means plus the
    paired 95% interval of the difference to the baseline (equal to the mean for the baseline itself).
    """
    results = check_results(results, None, ())
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves must map curve names to {{setting: knob value}}; got {curves!r}")
    settings = set(results.setting)
    for name, curve in curves.items():
        if not isinstance(curve, Mapping) or not curve:
            raise ValueError(f"curves[{name!r}] must map settings to knob values; got {curve!r}")
        unknown = sorted(set(curve) - settings)
        if unknown:
            raise ValueError(f"curves[{name!r}] names settings not in results: {unknown}")
    if baseline not in settings:
        raise ValueError(f"baseline {baseline!r} is not a setting of results ({sorted(settings)})")
    rows = []
    for stage, block in results.groupby("stage", sort=True):
        xs, ys = _table(block, x, domain), _table(block, y, domain)
        for name, curve in curves.items():
            for setting in sorted(curve, key=curve.get):
                if setting not in xs.columns or setting not in ys.columns:
                    continue  # this stage did not run it
                rows.append(
                    (stage, name, setting, float(curve[setting]), *_point(xs, ys, setting, baseline))
                )
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def frontier_figure(
    points: pd.DataFrame, x_title: str, y_title: str, title: str | None = None
) -> go.Figure:
    """One stage's frontier: each curve of `points` (frontier_points) as a line through its settings in
    knob order, each point labelled with its knob value, paired intervals as error bars on both axes."""
    stages = sorted(set(points.stage))
    if len(stages) != 1:
        raise ValueError(
            f"points must hold one stage; got {stages} (select one with points.stage == ...)"
        )
    fig = go.Figure()
    for i, (name, part) in enumerate(points.groupby("curve", sort=False)):
        color = OKABE_ITO[i % len(OKABE_ITO)]
        fig.add_scatter(
            x=part.x_mean,
            y=part.y_mean,
            error_x=interval_error(part.x_mean, part.x_low, part.x_high),
            error_y=interval_error(part.y_mean, part.y_low, part.y_high),
            mode="lines+markers+text",
            text=[f"{k:g}" for k in part.knob],
            textposition="top center",
            name=str(name),
            line=dict(color=color),
            customdata=np.stack([part.setting, part.n_seeds], axis=-1),
            hovertemplate="%{customdata[0]} (%{customdata[1]} seeds)<br>x %{x:.4f}<br>y %{y:.4f}",
        )
    fig.update_layout(template=TEMPLATE, title=title, legend_title_text="curve (labels: knob value)")
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return fig


def _table(block: pd.DataFrame, which: tuple[str, str], domain: str) -> pd.DataFrame:
    """seed x setting table of one (metric, split) on `domain`."""
    metric, split = which
    rows = block[(block.metric == metric) & (block.split == split) & (block.domain == domain)]
    if rows.empty:
        raise ValueError(f"results has no rows of metric {metric!r}, split {split!r}, domain {domain!r}")
    return rows.pivot(index="seed", columns="setting", values="value")


def _point(xs: pd.DataFrame, ys: pd.DataFrame, setting: str, baseline: str) -> tuple:
    """(n_seeds, x_mean, x_low, x_high, y_mean, y_low, y_high) of `setting` against `baseline`."""
    values = []
    for table in (xs, ys):
        s, b = table[setting].dropna(), table[baseline].dropna()
        shared = s.index.intersection(b.index)
        mean = float(s.loc[shared].mean())
        if setting == baseline:
            values.append((len(shared), mean, mean, mean))
            continue
        c = paired_comparison(s.loc[shared], b.loc[shared])
        values.append((len(shared), mean, mean + c.ci_low - c.mean_diff, mean + c.ci_high - c.mean_diff))
    (n, x_mean, x_low, x_high), (_, y_mean, y_low, y_high) = values
    return n, x_mean, x_low, x_high, y_mean, y_low, y_high
