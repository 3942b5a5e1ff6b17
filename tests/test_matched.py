"""drostudy.analysis.matched on constructed knob curves: shifts along the curve, points off it, flags."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis.matched import (
    DIAGNOSTIC_COLUMNS,
    isotonic,
    knob_curve,
    matched_by_knob,
    matched_comparisons,
    matched_diagnostics,
    matched_points,
)
from drostudy.analysis.paired import paired_comparison
from drostudy.analysis.stats import COLUMNS

SEEDS = [0, 1, 2, 3, 4]
SEED_EFFECT = np.array([0.04, -0.05, 0.01, 0.06, -0.03])  # shared by every setting of a seed
WOBBLE = np.array([0.002, -0.001, 0.0, -0.002, 0.001])  # zero mean
KNOBS = {"ordinary": 0.0, "ordinary beta 0.2": 0.2, "ordinary beta 0.4": 0.4, "ordinary beta 0.6": 0.6}
NAME = "ordinary matched on id accuracy (beta)"


def _curve(k, seed):
    """Ordinary's (ID, OOD) at knob k on a seed: ID falls, OOD rises with regularisation (nonlinearly)."""
    e = SEED_EFFECT[SEEDS.index(seed)]
    return 0.85 + e - 0.2 * k, 0.55 + e + 0.3 * k - 0.2 * k**2


def _rows(setting, seed, id_value, ood_value):
    return [
        dict(
            stage="dpo",
            setting=setting,
            seed=seed,
            split=split,
            domain="mean",
            metric="accuracy",
            value=v,
        )
        for split, v in (("id", id_value), ("ood", ood_value))
    ]


def _ordinary(curve=_curve, knobs=KNOBS):
    return [r for s, k in knobs.items() for seed in SEEDS for r in _rows(s, seed, *curve(k, seed))]


def _robust(setting, k, ood_shift=0.0, wobble=True):
    """A robust run whose ID equals ordinary's curve at knob k (linear between the grid points)."""
    rows = []
    for i, seed in enumerate(SEEDS):
        lo, hi = math.floor(k / 0.2 + 1e-9) * 0.2, math.floor(k / 0.2 + 1e-9) * 0.2 + 0.2
        t = (k - lo) / 0.2
        (x0, y0), (x1, y1) = _curve(lo, seed), _curve(hi, seed)
        shift = ood_shift + (WOBBLE[i] if wobble else 0.0)
        rows += _rows(setting, seed, x0 + t * (x1 - x0), y0 + t * (y1 - y0) + shift)
    return rows


def _frame(*parts):
    return pd.DataFrame([r for part in parts for r in part])


def test_shift_along_the_curve_is_zero_above_better_below_worse():
    results = _frame(
        _ordinary(),
        _robust("along", 0.3, wobble=False),
        _robust("above", 0.5, 0.02),
        _robust("below", 0.1, -0.02),
    )
    table = matched_comparisons(results, KNOBS, knob_name="beta")
    assert tuple(table.columns) == COLUMNS
    got = table.set_index("setting")
    assert abs(got.loc["along", "mean_diff"]) < 1e-12 and got.loc["along", "verdict"] == "not resolved"
    assert got.loc["above", "mean_diff"] == pytest.approx(0.02, abs=1e-12)
    assert got.loc["above", "verdict"] == "better" and got.loc["below", "verdict"] == "worse"
    assert got.loc["below", "mean_diff"] == pytest.approx(-0.02, abs=1e-12)
    assert (got.baseline == NAME).all() and (got.split == "ood").all() and (got.domain == "mean").all()
    assert (got.n_seeds == 5).all()
    # the interval and MDE are paired.paired_comparison's on the matched differences
    points = matched_points(results, KNOBS).query("setting == 'above'").set_index("seed")
    c = paired_comparison(points.y, points.y_matched)
    assert (got.loc["above", "ci_low"], got.loc["above", "mde"]) == pytest.approx((c.ci_low, c.mde))
    assert points.knob_matched.to_numpy() == pytest.approx(np.full(5, 0.5))
    # the raw (unmatched) OOD gain of "along" vs plain ordinary is not 0: matching is what removes it
    raw = results[(results.setting == "along") & (results.split == "ood")].value.to_numpy()
    assert raw.mean() - np.mean([_curve(0.0, s)[1] for s in SEEDS]) > 0.05


def test_out_of_range_seed_is_flagged_and_left_out_not_extrapolated():
    robust = _robust("tv", 0.3, 0.01)
    for r in robust:  # seed 3's ID beyond the least regularised ordinary run
        if r["seed"] == 3 and r["split"] == "id":
            r["value"] = _curve(0.0, 3)[0] + 0.01
    results = _frame(_ordinary(), robust)
    points = matched_points(results, KNOBS).set_index("seed")
    assert not points.loc[3, "bracketed"] and math.isnan(points.loc[3, "y_matched"])
    assert points.drop(3).bracketed.all()
    row = matched_comparisons(results, KNOBS).iloc[0]
    assert row.n_seeds == 4
    assert row.mean_diff == pytest.approx(0.01 + WOBBLE[[0, 1, 2, 4]].mean(), abs=1e-12)
    diag = matched_diagnostics(results, KNOBS, knob_name="beta")
    assert tuple(diag.columns) == DIAGNOSTIC_COLUMNS
    d = diag.iloc[0]
    assert (d.n_seeds, d.seeds_bracketed, d.seeds_left_out, d.left_out) == (5, 4, 1, "[3]")
    assert d.baseline == NAME and d.seeds_isotonic == 0


def test_fewer_than_two_bracketed_seeds_give_no_verdict():
    robust = _robust("tv", 0.3)
    for r in robust:
        if r["seed"] != 0 and r["split"] == "id":
            r["value"] = 0.99
    with pytest.warns(UserWarning, match="fewer than 2"):
        row = matched_comparisons(_frame(_ordinary(), robust), KNOBS).iloc[0]
    assert row.n_seeds == 1 and math.isnan(row.mean_diff) and row.verdict == "not resolved"


def test_non_monotone_curve_uses_the_isotonic_fit():
    ids = {0.0: 0.80, 0.2: 0.78, 0.4: 0.79, 0.6: 0.70}  # 0.78, 0.79 violate a decreasing curve

    def curve(k, seed):
        return ids[k] + SEED_EFFECT[SEEDS.index(seed)], 0.5 + k

    robust = [
        r
        for i, seed in enumerate(SEEDS)
        for r in _rows("tv", seed, 0.7925 + SEED_EFFECT[i], 0.62 + WOBBLE[i])
    ]
    flat = [r for i, seed in enumerate(SEEDS) for r in _rows("kl", seed, 0.785 + SEED_EFFECT[i], 0.8)]
    results = _frame(_ordinary(curve), robust, flat)
    curves = knob_curve(results, KNOBS)
    assert (curves.curve == "isotonic decreasing").all()
    seed0 = curves[curves.seed == 0]
    assert seed0.x_fit.to_numpy() == pytest.approx(np.array([0.80, 0.785, 0.785, 0.70]) + SEED_EFFECT[0])
    points = matched_points(results, KNOBS).set_index(["setting", "seed"])
    # 0.7925 is halfway between the fit's 0.80 (beta 0) and 0.785 (beta 0.2): beta 0.1, OOD 0.6
    # (the raw IDs would give beta 0.075)
    assert points.loc["tv"].knob_matched.to_numpy() == pytest.approx(np.full(5, 0.1))
    assert points.loc["tv"].y_matched.to_numpy() == pytest.approx(np.full(5, 0.6))
    # on the fit's flat stretch (beta 0.2 to 0.4) the match is its middle, beta 0.3
    assert points.loc["kl"].knob_matched.to_numpy() == pytest.approx(np.full(5, 0.3))
    assert (matched_diagnostics(results, KNOBS).seeds_isotonic == 5).all()
    row = matched_comparisons(results, KNOBS).set_index("setting").loc["tv"]
    assert row.mean_diff == pytest.approx(0.02, abs=1e-12) and row.verdict == "better"
    assert isotonic([1.0, 3.0, 2.0, 4.0]) == pytest.approx([1.0, 2.5, 2.5, 4.0])


def test_match_on_another_quantity():
    results = _frame(_ordinary(), _robust("tv", 0.3, 0.02))
    kl = results[results.split == "id"].assign(metric="kl", split="ood")  # KL to the reference: ID copy
    results = pd.concat([results, kl], ignore_index=True)
    table = matched_comparisons(results, KNOBS, knob_name="beta", match_on=("kl", "ood"))
    assert table.baseline.iat[0] == "ordinary matched on ood kl (beta)"
    assert table.mean_diff.iat[0] == pytest.approx(0.02, abs=1e-12)


def test_bad_input_raises_naming_the_argument():
    results = _frame(_ordinary(), _robust("tv", 0.3))
    with pytest.raises(ValueError, match="knobs names settings not in results"):
        matched_comparisons(results, KNOBS | {"ordinary beta 9": 9.0})
    with pytest.raises(ValueError, match="knobs has no knob value"):
        matched_comparisons(results, {k: v for k, v in KNOBS.items() if k != "ordinary beta 0.4"})
    with pytest.raises(ValueError, match="knobs must map every setting"):
        matched_comparisons(results, KNOBS | {"ordinary beta 0.4": None})
    with pytest.raises(ValueError, match="knobs must map at least 2"):
        matched_comparisons(results[results.setting.isin(["ordinary", "tv"])], {"ordinary": 0.0})
    with pytest.raises(ValueError, match="knobs must give distinct"):
        matched_comparisons(results, KNOBS | {"ordinary beta 0.4": 0.2})
    missing = results[~((results.setting == "ordinary beta 0.2") & (results.seed == 2))]
    with pytest.raises(ValueError, match=r"results: .*no run for seeds \[2\]"):
        matched_comparisons(missing, KNOBS)


def test_matched_by_knob_reads_each_knob_without_the_others_settings():
    # a second knob whose curve is the beta curve relabelled: the same matched numbers, under its own name
    steps = {"ordinary": 6.0, "ordinary steps 4": 4.0, "ordinary steps 2": 2.0, "ordinary steps 1": 1.0}
    relabel = dict(zip(list(KNOBS)[1:], list(steps)[1:], strict=True))
    beta_rows = _ordinary()
    step_rows = [r | {"setting": relabel[r["setting"]]} for r in beta_rows if r["setting"] != "ordinary"]
    results = _frame(beta_rows, step_rows, _robust("tv", 0.3, ood_shift=0.01))
    rows, diagnosed = matched_by_knob(results, {"beta": KNOBS, "steps": steps})
    assert list(rows.baseline) == [NAME, NAME.replace("(beta)", "(steps)")]
    assert rows.mean_diff.iloc[0] == pytest.approx(rows.mean_diff.iloc[1], abs=1e-12)
    assert rows.mean_diff.iloc[0] == pytest.approx(0.01, abs=1e-12)
    assert list(diagnosed.baseline) == list(rows.baseline) and (diagnosed.seeds_left_out == 0).all()
    with pytest.raises(ValueError, match="curves must name at least one knob"):
        matched_by_knob(results, {})
