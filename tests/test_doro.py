"""DORO (outlier-robust DRO) weights: against cvxpy on the trimmed problem, against the min-max definition,
by properties, and on bad input.

The trimmed nominal p'_eps is recomputed here in exact rational arithmetic (the fraction read as the
decimal it is written as), so the test shares no code with drostudy's trimming.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_weights import LOSSES, _assert_optimal, _make_losses, _radii, _radius, _solver_optimum, _unit

from drostudy.losses import robust_bradley_terry_loss, robust_dpo_loss, robust_loss
from drostudy.weights import DIVERGENCES, doro_weights, robust_value, worst_case_weights


def _trimmed_prior(losses: np.ndarray, fraction: float, prior: np.ndarray | None = None) -> np.ndarray:
    """p with `fraction` of its mass removed from the largest losses (ties share), renormalised: exact."""
    n = len(losses)
    mass = [Fraction(1, n)] * n if prior is None else [Fraction(float(p)) for p in prior]
    total = sum(mass)
    mass = [m / total for m in mass]
    remaining = Fraction(str(fraction))
    kept = list(mass)
    for level in sorted(set(losses.tolist()), reverse=True):
        tied = [i for i in range(n) if losses[i] == level]
        level_mass = sum(mass[i] for i in tied)
        take = min(level_mass, remaining)
        for i in tied:
            kept[i] = mass[i] * (1 - take / level_mass)
        remaining -= take
    scale = sum(kept)
    return np.array([float(k / scale) for k in kept])


def _check_doro(losses, divergence, radius, fraction, prior=None):
    prior_t = None if prior is None else torch.tensor(prior)
    w = worst_case_weights(torch.tensor(losses), divergence, radius, prior_t, outlier_fraction=fraction)
    q = w.numpy()
    clean = _trimmed_prior(losses, fraction, prior)
    keep = clean > 0
    assert (q[~keep] == 0).all()  # nothing on the removed top
    assert q.min() >= 0 and abs(q.sum() - 1) < 1e-12
    if radius == (1.0 if divergence == "cvar" else 0.0):
        np.testing.assert_allclose(q, clean, rtol=0, atol=1e-15)  # the trimmed mean's weights
        return
    _assert_optimal(q[keep], losses[keep], divergence, radius, clean[keep])


GRID = [(d, n, f) for d in DIVERGENCES for n in (1, 2, 3, 7, 10, 64, 300) for f in (0.05, 0.3, 0.5)]


@pytest.mark.parametrize("divergence,n,fraction", GRID)
def test_matches_solver_on_the_trimmed_problem(divergence, n, fraction):
    kinds = ["normal", "ties", "constant", "negative", "huge"]
    losses = _make_losses(kinds[(n + int(fraction * 20)) % len(kinds)], n, seed=n + 7)
    for radius in _radii(divergence, n):
        _check_doro(losses, divergence, radius, fraction)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_ties_at_the_boundary_share_the_removal(divergence):
    # three tied maxima, 8 elements, eps 0.3: 2.4 of the 3 tied elements' mass is removed, 0.6 kept
    losses = np.array([0.1, 2.5, -1.0, 2.5, 2.4, 2.5, 0.0, 1.0])
    for radius in _radii(divergence, 8):
        _check_doro(losses, divergence, radius, 0.3)
    w = worst_case_weights(
        torch.tensor(losses), divergence, _radii(divergence, 8)[2], outlier_fraction=0.3
    )
    assert w[1] == w[3] == w[5] > 0


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_general_prior_matches_solver(divergence):
    rng = np.random.default_rng(11)
    prior = rng.dirichlet(np.ones(9))
    losses = np.round(rng.normal(size=9), 1)
    for radius in _radii(divergence, 9):
        _check_doro(losses, divergence, radius, 0.2, prior)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("seed", range(3))
def test_trimming_the_top_minimises_over_the_paper_clean_distributions(divergence, seed):
    # DORO's risk is a min over every p' with (1 - eps) p' <= p; no other removal of eps mass gives less.
    # The inner maximum is concave in p' (an LP's value in its right-hand side; for kl and chi2 the ball
    # is jointly convex in (q, p')), so the minimum sits at a vertex of the removals: try random ones.
    rng = np.random.default_rng(seed)
    n, fraction = 12, 0.25
    losses = np.round(rng.normal(size=n), 1)
    radius = _radii(divergence, n)[2]
    ours = robust_value(torch.tensor(losses), divergence, radius, outlier_fraction=fraction).item()
    p = np.full(n, 1 / n)
    for _ in range(10):
        # a random vertex of {0 <= r <= p, sum r = eps}: remove eps greedily in a random order
        removed, left = np.zeros(n), fraction
        for i in rng.permutation(n):
            removed[i] = min(p[i], left)
            left -= removed[i]
        clean = (p - removed) / (1 - fraction)
        keep = clean > 1e-12
        value, _ = _solver_optimum(
            _unit(losses)[keep], divergence, radius, clean[keep] / clean[keep].sum()
        )
        span = losses.max() - losses.min()
        assert (ours - losses.min()) / span <= value + 2e-6


# ---- properties -------------------------------------------------------------------------------------


@settings(max_examples=int(os.environ.get("WEIGHTS_EXAMPLES", "60")), deadline=None)
@given(
    values=LOSSES,
    divergence=st.sampled_from(DIVERGENCES),
    radius_fraction=st.floats(0.0, 1.0),
    fraction=st.floats(0.0, 0.95),
    seed=st.integers(0, 99),
)
def test_properties(values, divergence, radius_fraction, fraction, seed):
    losses = torch.tensor(values, dtype=torch.float64)
    n = len(values)
    radius = _radius(divergence, radius_fraction)
    w = worst_case_weights(losses, divergence, radius, outlier_fraction=fraction)
    assert (w >= 0).all() and abs(w.sum().item() - 1) < 1e-12
    # the removed top gets nothing: every loss above the eps-quantile from the top
    descending = torch.sort(losses, descending=True).values
    boundary = descending[min(int(math.floor(fraction * n * (1 + 1e-9))), n - 1)]
    assert (w[losses > boundary] == 0).all()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        worst_case_weights(losses[perm], divergence, radius, outlier_fraction=fraction),
        w[perm],
        rtol=1e-9,
        atol=1e-12,
    )
    for level in torch.unique(losses):
        tied = w[losses == level]
        assert torch.equal(tied, tied[:1].expand_as(tied))
    # more outliers removed: no larger value; a larger ball: no smaller value
    value = (w @ losses).item()
    scale = losses.abs().max().item() + 1.0
    plain = robust_value(losses, divergence, radius).item()
    assert value <= plain + 1e-12 * scale
    more = robust_value(losses, divergence, radius, outlier_fraction=min(0.99, fraction + 0.1)).item()
    assert more <= value + 1e-12 * scale
    smaller = _radius(divergence, radius_fraction / 2)
    assert (
        robust_value(losses, divergence, smaller, outlier_fraction=fraction).item()
        <= value + 1e-12 * scale
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fraction_zero_is_the_plain_worst_case_bitwise(divergence, dtype):
    losses = torch.randn(33, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 3
    for radius in _radii(divergence, 33):
        plain = worst_case_weights(losses, divergence, radius)
        assert torch.equal(worst_case_weights(losses, divergence, radius, outlier_fraction=0.0), plain)
        assert torch.equal(doro_weights(losses, divergence, radius, 0.0), plain)
        assert torch.equal(robust_loss(losses, divergence, radius, outlier_fraction=0).weights, plain)


@pytest.mark.parametrize("n,fraction", [(100, 0.29), (100, 0.57), (7, 3 / 7)])
def test_integer_count_removal_is_exact_despite_rounding(n, fraction):
    # 0.29 * 100 = 28.999999999999996 in float64: exactly 29 examples go, and none keeps a sliver of mass
    # (TV would move its ball's mass onto such a sliver, the largest loss left in the support)
    k = round(fraction * n)
    losses = torch.arange(n, dtype=torch.float64)
    w = worst_case_weights(losses, "tv", 0.1, outlier_fraction=fraction)
    assert (w[n - k :] == 0).all() and w[n - k - 1].item() == pytest.approx(1 / (n - k) + 0.1)
    trimmed_mean = robust_value(losses, "cvar", 1.0, outlier_fraction=fraction)
    assert trimmed_mean.item() == pytest.approx(losses[: n - k].mean().item(), rel=1e-15)


def test_cvar_doro_matches_the_paper_estimator():
    # Zhai et al.'s CVaR-DORO: drop the int(eps n) largest, average the next alpha (1 - eps) n
    losses = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    eps, alpha = 0.1, 0.25
    descending = torch.sort(losses, descending=True).values
    expected = descending[4 : 4 + 9].sum() / (alpha * 36)
    assert robust_value(losses, "cvar", alpha, outlier_fraction=eps).item() == pytest.approx(
        expected.item()
    )


def test_float32_device_and_dtype_and_danskin_gradient():
    losses = torch.randn(20, dtype=torch.float32, requires_grad=True)
    w = worst_case_weights(losses, "kl", 0.2, outlier_fraction=0.15)
    assert w.dtype == torch.float32 and not w.requires_grad
    robust_value(losses, "kl", 0.2, outlier_fraction=0.15).backward()
    torch.testing.assert_close(losses.grad, w)


def test_robust_losses_accept_the_fraction_by_keyword():
    chosen = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rejected = torch.randn(16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    bt = robust_bradley_terry_loss(chosen, rejected, "chi2", 0.5, outlier_fraction=0.125)
    per_example = -torch.nn.functional.logsigmoid(chosen - rejected)
    expected = worst_case_weights(per_example, "chi2", 0.5, outlier_fraction=0.125)
    torch.testing.assert_close(bt.weights, expected, rtol=0, atol=0)
    assert bt.loss.item() == pytest.approx((expected * per_example).sum().item(), rel=1e-12)
    assert (bt.weights[torch.topk(per_example, 2).indices] == 0).all()
    logps = [
        torch.randn(8, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in range(4)
    ]
    dpo = robust_dpo_loss(*logps, beta=0.1, divergence="tv", radius=0.0, outlier_fraction=0.25)
    assert (dpo.weights == 0).sum() == 2 and dpo.loss.item() < dpo.metrics["dro/mean_loss"]


# ---- bad input -------------------------------------------------------------------------------------

GOOD = torch.tensor([0.1, 0.2, 0.3])
BAD_CALLS = [
    lambda: worst_case_weights(GOOD, "kl", 0.1, outlier_fraction=1.0),
    lambda: worst_case_weights(GOOD, "kl", 0.1, outlier_fraction=-0.1),
    lambda: worst_case_weights(GOOD, "kl", 0.1, outlier_fraction=math.nan),
    lambda: worst_case_weights(GOOD, "kl", 0.1, outlier_fraction="0.1"),
    lambda: worst_case_weights(GOOD, "kl", 0.1, outlier_fraction=True),
    lambda: doro_weights(GOOD, "tv", 0.1, 1.5),
    lambda: robust_loss(GOOD, "tv", 0.1, outlier_fraction=2.0),
    lambda: robust_loss(GOOD, "tv", 0.1, groups=torch.tensor([0, 1, 1]), outlier_fraction=0.1),
]


@pytest.mark.parametrize("call", BAD_CALLS)
def test_bad_fraction_raises_value_error_naming_it_and_the_range(call):
    with pytest.raises(ValueError, match="outlier_fraction"):
        call()
    try:
        call()
    except ValueError as error:
        assert "[0, 1)" in str(error) or "groups" in str(error)


def test_bad_losses_and_radius_are_still_caught():
    with pytest.raises(ValueError, match="losses"):
        worst_case_weights(torch.tensor([0.1, math.nan]), "kl", 0.1, outlier_fraction=0.1)
    with pytest.raises(ValueError, match="radius"):
        worst_case_weights(GOOD, "tv", 1.5, outlier_fraction=0.1)
    with pytest.raises(ValueError, match="prior"):
        worst_case_weights(GOOD, "kl", 0.1, prior=torch.tensor([0.5, 0.5]), outlier_fraction=0.1)
