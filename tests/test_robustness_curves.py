"""Robustness curves (drostudy.analysis.robustness) on constructed data: radius 0 is the nominal accuracy, the
TV closed form matches an LP, curves fall with the radius, and the worst case bounds a measured shift."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from drostudy.analysis import robustness


def constructed(seed=0):
    rng = np.random.default_rng(seed)
    accuracy = {"math": 0.9, "code": 0.8, "reasoning": 0.6, "safety": 0.4}
    domains = np.repeat(list(accuracy), [40, 30, 50, 20])
    margins = np.where(rng.random(len(domains)) < pd.Series(accuracy)[domains].to_numpy(), 1.0, -1.0)
    return margins * rng.uniform(0.1, 2.0, len(domains)), domains


def lp_tv(losses, prior, radius):
    """max q.l s.t. q = prior + u - v, u, v >= 0, sum u = sum v <= radius (TV <= radius), q >= 0."""
    n = len(losses)
    c = np.concatenate([-losses, losses])
    a_eq = np.concatenate([np.ones(n), -np.ones(n)])[None]
    a_ub = np.vstack(
        [np.concatenate([np.zeros(n), np.ones(n)]), np.hstack([np.zeros((n, n)), np.eye(n)])]
    )
    b_ub = np.concatenate([[radius], prior])
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=[0.0], bounds=(0, None))
    return float(prior @ losses - res.fun)


@pytest.mark.parametrize("radius", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_tv_closed_form_matches_lp(radius):
    rng = np.random.default_rng(1)
    losses = rng.normal(size=12)
    prior = rng.random(12) * (rng.random(12) < 0.7)  # some zeros: held-out points
    prior /= prior.sum()
    assert robustness.tv_worst_mean(losses, prior, radius) == pytest.approx(
        lp_tv(losses, prior, radius), abs=1e-9
    )


@pytest.mark.parametrize("divergence", ["tv", "kl", "chi2"])
def test_radius_zero_is_nominal_and_curve_falls(divergence):
    margins, domains = constructed()
    mix = {"math": 1.0, "code": 1.0}
    curve = robustness.robustness_curve(margins, domains, mix, divergence, [0.0, 0.1, 0.3, 0.6])
    nominal = (
        0.5 * (margins[domains == "math"] > 0).mean() + 0.5 * (margins[domains == "code"] > 0).mean()
    )
    for _, part in curve.groupby("level"):
        assert part.accuracy.iloc[0] == pytest.approx(nominal)
        assert (np.diff(part.accuracy) <= 1e-12).all() and part.accuracy.iloc[-1] < nominal
    pair = curve[curve.level == "pair"].accuracy.to_numpy()
    assert (pair <= curve[curve.level == "domain"].accuracy.to_numpy() + 1e-12).all()


def test_bound_holds_on_every_shift_and_is_tight_at_the_vertex():
    margins, domains = constructed(2)
    check = robustness.bound_check(margins, domains, {"math": 2.0, "code": 1.0})
    assert set(check.domain) == {"reasoning", "safety"} and check.holds.all()
    # The worst case takes mass from the best training domain first, the mixture from all: strictly below
    # until t = 1, where both put everything on the least accurate domain (safety).
    worst = check[check.domain == "safety"].set_index("shift")
    assert worst.loc[1.0, "gap"] == pytest.approx(0.0, abs=1e-12) and (worst.gap.iloc[:-1] > 0).all()
    assert (check[check.domain == "reasoning"].gap > 0).all()


def test_correctness_input_equals_margins():
    margins, domains = constructed(3)
    a = robustness.robustness_curve(margins, domains, {"math": 1}, "tv", [0.2])
    b = robustness.robustness_curve(
        (margins > 0).astype(float), domains, {"math": 1}, "tv", [0.2], correct=True
    )
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(train_mix={"poetry": 1.0}), "train_mix"),
        (dict(train_mix={"math": -1.0, "code": 2.0}), "train_mix"),
        (dict(scores=[1.0, 0.5], correct=True), "0/1"),
        (dict(scores=[1.0]), "one length"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(scores=[1.0, -1.0], domains=["math", "code"], train_mix={"math": 1.0})
    with pytest.raises(ValueError, match=match):
        robustness.robustness_curve(**(args | kwargs))
