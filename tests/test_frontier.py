"""drostudy.analysis.frontier on constructed results: means, paired intervals, curve order, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis.frontier import POINT_COLUMNS, frontier_figure, frontier_points
from drostudy.analysis.paired import paired_comparison

SEEDS = [0, 1, 2, 3]
SEED_EFFECT = np.array([0.05, -0.04, 0.02, -0.03])  # shared by every setting of a seed
NOISE = np.array([0.003, -0.002, 0.001, -0.002])
SETTINGS = {  # setting -> (id mean, ood mean, per-seed noise scale)
    "ordinary": (0.80, 0.50, 0.0),
    "ordinary beta 0.4": (0.78, 0.53, 1.0),
    "ordinary beta 1.6": (0.74, 0.55, -1.0),
    "tv 0.2": (0.79, 0.54, 2.0),
}
CURVES = {
    "ordinary (beta)": {"ordinary beta 1.6": 1.6, "ordinary": 0.1, "ordinary beta 0.4": 0.4},
    "tv": {"ordinary": 0.0, "tv 0.2": 0.2},
}


def _results():
    rows = []
    for setting, (x, y, scale) in SETTINGS.items():
        for i, seed in enumerate(SEEDS):
            for split, v in (("id", x), ("ood", y)):
                value = v + SEED_EFFECT[i] + scale * NOISE[i]
                row = dict(stage="dpo", setting=setting, seed=seed, split=split, domain="mean")
                rows.append(row | dict(metric="accuracy", value=value))
    return pd.DataFrame(rows)


def test_points_are_seed_means_with_paired_intervals_in_knob_order():
    results = _results()
    points = frontier_points(results, CURVES)
    assert list(points.columns) == list(POINT_COLUMNS)
    beta = points[points.curve == "ordinary (beta)"]
    assert beta.setting.tolist() == ["ordinary", "ordinary beta 0.4", "ordinary beta 1.6"]
    tv = points[points.curve == "tv"].set_index("setting")
    wide = results.pivot_table(index=["seed", "split"], columns="setting", values="value")
    ood = wide.xs("ood", level="split")
    assert tv.loc["tv 0.2", "y_mean"] == pytest.approx(ood["tv 0.2"].mean())
    c = paired_comparison(ood["tv 0.2"], ood["ordinary"])
    # the interval is the paired one (narrow: the seed effect cancels), around the setting's mean
    assert tv.loc["tv 0.2", "y_high"] - tv.loc["tv 0.2", "y_low"] == pytest.approx(c.ci_high - c.ci_low)
    assert tv.loc["tv 0.2", "y_high"] - tv.loc["tv 0.2", "y_low"] < ood["tv 0.2"].std()
    base = tv.loc["ordinary"]
    assert base.y_low == base.y_mean == base.y_high and base.n_seeds == len(SEEDS)


def test_figure_draws_one_line_per_curve_and_refuses_several_stages():
    points = frontier_points(_results(), CURVES)
    fig = frontier_figure(points, "ID accuracy", "OOD accuracy", "frontier")
    assert [t.name for t in fig.data] == list(CURVES)
    assert list(fig.data[0].text) == ["0.1", "0.4", "1.6"]
    two = pd.concat([points, points.assign(stage="rm")])
    with pytest.raises(ValueError, match="one stage"):
        frontier_figure(two, "x", "y")


@pytest.mark.parametrize(
    "curves, match",
    [
        ({}, "curves must map"),
        ({"tv": {}}, r"curves\['tv'\] must map"),
        ({"tv": {"tv 9": 9.0}}, "not in results"),
    ],
)
def test_bad_curves_are_refused(curves, match):
    with pytest.raises(ValueError, match=match):
        frontier_points(_results(), curves)


def test_missing_axis_is_refused():
    with pytest.raises(ValueError, match="no rows of metric 'kl'"):
        frontier_points(_results(), CURVES, x=("kl", "ood"))
