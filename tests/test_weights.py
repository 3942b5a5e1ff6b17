"""drostudy.weights against a convex solver (cvxpy + CLARABEL), a dual certificate, and the properties the
maths implies.

The solver is the reference for the optimal VALUE, and our weights are checked for feasibility; for kl and
chi2 our value must also equal the Lagrangian dual's minimum (an upper bound on any feasible value), which
certifies optimality far more tightly than the solver can. q itself is compared with the solver's only for
kl and chi2 at small n (strictly convex, so the maximiser is unique). Solver inputs are rescaled to unit
range: the maximiser is invariant to l -> a l + b (a > 0), and the solver is far less accurate on 1e4.
"""

from __future__ import annotations

import math
import os

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from drostudy import _solvers
from drostudy.weights import (
    DIVERGENCES,
    group_worst_case_weights,
    penalised_value,
    penalised_weights,
    robust_value,
    validate_radius,
    worst_case_weights,
)

# On unit-range losses. The solver's own error: its KL-ball solutions violate the constraint by ~1e-7
# relative (tighter CLARABEL tolerances end in "inaccurate"), so the tight optimality check for kl and chi2
# is a dual bound instead, which certifies our value to DUAL_TOL.
SOLVER_TOL = 2e-6
DUAL_TOL = 1e-10
FEAS_TOL = 1e-9


def _unit(losses: np.ndarray) -> np.ndarray:
    span = losses.max() - losses.min()
    return (losses - losses.min()) / (span if span > 0 else 1.0)


def _divergence(q: np.ndarray, divergence: str, prior: np.ndarray) -> float:
    """D(q || prior); for cvar, the largest alpha whose set {q <= prior / alpha} holds q."""
    if divergence == "tv":
        return 0.5 * np.abs(q - prior).sum()
    if divergence == "kl":
        pos = q > 0
        return float((q[pos] * np.log(q[pos] / prior[pos])).sum())
    if divergence == "chi2":
        return 0.5 * float((prior * (q / prior - 1.0) ** 2).sum())
    return float(1.0 / (q / prior).max())


def _feasible(q: np.ndarray, divergence: str, radius: float, prior: np.ndarray) -> None:
    assert q.min() >= 0.0 and abs(q.sum() - 1.0) < 1e-12
    d = _divergence(q, divergence, prior)
    if divergence == "cvar":
        assert d >= radius * (1 - FEAS_TOL)
    else:
        assert d <= radius * (1 + FEAS_TOL) + 1e-15


def _solver_optimum(losses: np.ndarray, divergence: str, radius: float, prior: np.ndarray):
    """(optimal value, maximiser) of max q.l over the ball, by CLARABEL."""
    q = cp.Variable(len(losses), nonneg=True)
    ball = {
        "tv": lambda: 0.5 * cp.norm1(q - prior) <= radius,
        "kl": lambda: cp.sum(cp.rel_entr(q, prior)) <= radius,
        # as a second-order cone: CLARABEL fails on the sum-of-squares form at n = 4096
        "chi2": lambda: cp.norm(cp.multiply(prior**-0.5, q - prior)) <= math.sqrt(2 * radius),
        "cvar": lambda: q <= prior / radius,
    }[divergence]()
    problem = cp.Problem(cp.Maximize(q @ losses), [cp.sum(q) == 1, ball])
    problem.solve(solver=cp.CLARABEL)
    assert problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE)
    return problem.value, q.value


def _dual_bound(losses: np.ndarray, divergence: str, radius: float, prior: np.ndarray) -> float:
    """min over the dual variable of the Lagrangian dual: an upper bound on the optimum for any dual value,
    equal to it at the minimiser (strong duality), found here by a 1-D bounded Brent search.

    kl:   min_{lam > 0} lam * radius + lam * log E_p exp(l / lam)
    chi2: min_c c + sqrt((1 + 2 radius) E_p (l - c)_+^2)
    """
    top = losses.max()
    if divergence == "kl":

        def dual(u):
            lam = math.exp(u)
            return top + lam * radius + lam * math.log(prior @ np.exp((losses - top) / lam))

        bounds = (-40.0, 20.0)
    else:

        def dual(c):
            return c + math.sqrt((1 + 2 * radius) * (prior @ np.maximum(losses - c, 0.0) ** 2))

        bounds = (losses.min() - 1e6, top)
    grid = np.linspace(*bounds, 400)  # bracket the convex minimum before polishing
    best = grid[np.argmin([dual(x) for x in grid])]
    step = grid[1] - grid[0]
    result = minimize_scalar(
        dual, bounds=(best - step, best + step), method="bounded", options={"xatol": 1e-14}
    )
    return min(result.fun, dual(best))


def _make_losses(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=n)
    return {
        "normal": base,
        "ties": np.round(base * 2) / 2,  # a handful of levels, many-way ties, including at the maximum
        "constant": np.full(n, 0.7),
        "negative": -np.abs(base) - 3.0,
        "huge": base * 1e4 + 5e3,
    }[kind]


def _radii(divergence: str, n: int) -> list[float]:
    beyond = {"tv": 1.0, "kl": math.log(n) + 1.0, "chi2": float(n), "cvar": 0.5 / n}[divergence]
    grid = {"tv": [0.0, 0.05, 0.4, 0.8], "kl": [0.0, 1e-4, 0.1, 1.0], "chi2": [0.0, 1e-4, 0.1, 1.0]}
    return grid.get(divergence, [1.0, 0.9, 0.3, 0.05]) + [beyond]


def _check_against_solver(losses, divergence, radius, dtype=torch.float64, prior=None):
    n = len(losses)
    prior_t = None if prior is None else torch.tensor(prior, dtype=dtype)
    w = worst_case_weights(torch.tensor(losses, dtype=dtype), divergence, radius, prior_t)
    assert w.dtype == dtype and w.shape == (n,)
    prior = np.full(n, 1.0 / n) if prior is None else prior
    nominal = 1.0 if divergence == "cvar" else 0.0
    if radius == nominal:  # the ball is one point; solvers are loose there
        assert torch.equal(w, torch.tensor(prior, dtype=dtype))
        return
    if dtype == torch.float32:  # weights rounded to float32 after a float64 solve: value to ~1e-7
        q, unit = w.double().numpy(), _unit(losses.astype(np.float32).astype(np.float64))
        value, _ = _solver_optimum(unit, divergence, radius, prior)
        assert q / q.sum() @ unit == pytest.approx(value, abs=SOLVER_TOL + 1e-6)
        return
    _assert_optimal(w.numpy(), losses, divergence, radius, prior)


def _assert_optimal(q, losses, divergence, radius, prior):
    """q is feasible and optimal: against the solver's value, and for kl/chi2 tightly against the dual."""
    unit = _unit(losses)
    top = unit == unit.max()
    vertex = _divergence(_vertex(top, prior), divergence, prior)
    if (radius <= vertex) if divergence == "cvar" else (vertex <= radius):  # at or beyond the vertex
        np.testing.assert_allclose(q, _vertex(top, prior), rtol=0, atol=1e-12)
        return
    _feasible(q, divergence, radius, prior)
    value, q_ref = _solver_optimum(unit, divergence, radius, prior)
    assert q @ unit == pytest.approx(value, abs=SOLVER_TOL)
    if divergence in ("kl", "chi2"):
        assert q @ unit == pytest.approx(_dual_bound(unit, divergence, radius, prior), abs=DUAL_TOL)
        if len(q) <= 64:  # strictly convex: the maximiser is unique
            np.testing.assert_allclose(q, q_ref, atol=1e-4)


def _vertex(top: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return np.where(top, prior, 0.0) / prior[top].sum()


GRID = [(d, n, i) for d in DIVERGENCES for n in (1, 2, 3, 7, 64, 1000) for i in range(5)]


@pytest.mark.parametrize("divergence,n,radius_index", GRID)
def test_matches_solver_on_grid(divergence, n, radius_index):
    kinds = ["normal", "ties", "constant", "negative", "huge"]
    losses = _make_losses(kinds[(n + radius_index) % len(kinds)], n, seed=n + 31 * radius_index)
    _check_against_solver(losses, divergence, _radii(divergence, n)[radius_index])


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "negative", "huge"])
def test_matches_solver_float32_every_kind(divergence, kind):
    losses = _make_losses(kind, 40, seed=7)
    for radius in _radii(divergence, 40)[1:]:
        _check_against_solver(losses, divergence, radius, dtype=torch.float32)


@pytest.mark.parametrize("divergence,n", [("kl", 2048), ("chi2", 4096), ("tv", 3000), ("cvar", 4096)])
def test_matches_solver_large_n(divergence, n):
    losses = _make_losses("ties" if divergence in ("tv", "cvar") else "normal", n, seed=n)
    _check_against_solver(losses, divergence, {"tv": 0.2, "cvar": 0.1}.get(divergence, 0.3))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_general_prior_matches_solver(divergence):
    rng = np.random.default_rng(3)
    prior = rng.dirichlet(np.ones(9))
    losses = np.round(rng.normal(size=9), 1)
    for radius in _radii(divergence, 9)[1:]:
        _check_against_solver(losses, divergence, radius, prior=prior)


def _penalised_optimum(losses: np.ndarray, divergence: str, reg: float) -> float:
    n = len(losses)
    q = cp.Variable(n, nonneg=True)
    penalty = (
        cp.sum(cp.rel_entr(q, np.full(n, 1 / n)))
        if divergence == "kl"
        else 0.5 * n * cp.sum_squares(q - 1 / n)
    )
    problem = cp.Problem(cp.Maximize(q @ losses - reg * penalty), [cp.sum(q) == 1])
    problem.solve(solver=cp.CLARABEL)
    return problem.value


@pytest.mark.parametrize("divergence", ["kl", "chi2"])
@pytest.mark.parametrize("n,reg", [(1, 0.3), (5, 0.01), (64, 0.3), (300, 3.0), (64, 100.0)])
def test_penalised_matches_solver(divergence, n, reg):
    losses = _make_losses("ties" if n == 64 else "normal", n, seed=n)
    w = penalised_weights(torch.tensor(losses), divergence, reg)
    value = penalised_value(torch.tensor(losses), divergence, reg).item()
    q = w.numpy()
    penalty = _divergence(q, divergence, np.full(n, 1 / n))
    assert q.min() >= 0 and abs(q.sum() - 1) < 1e-12
    assert value == pytest.approx(q @ losses - reg * penalty, abs=1e-10)  # the value is w's objective
    assert value == pytest.approx(_penalised_optimum(losses, divergence, reg), abs=1e-6)


def test_penalised_kl_is_stable_for_huge_ratios():
    losses = torch.tensor([1e4, 2e4, 2e4, -3e4], dtype=torch.float32)
    w = penalised_weights(losses, "kl", 1e-3)
    assert torch.equal(w, torch.tensor([0.0, 0.5, 0.5, 0.0]))
    value = penalised_value(losses, "kl", 1e-3)
    assert torch.isfinite(value) and value.item() == pytest.approx(2e4 + 1e-3 * math.log(0.5))
    assert torch.equal(penalised_weights(losses, "chi2", math.inf), torch.full((4,), 0.25))
    tiny = penalised_value(losses.double(), "kl", 1e-305)  # l / reg alone would overflow to inf
    assert (
        tiny.item() == pytest.approx(2e4)
        and torch.isfinite(penalised_weights(losses, "kl", 1e-305)).all()
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_group_weights_match_solver_over_group_proportions(divergence):
    rng = np.random.default_rng(5)
    groups = np.array([0, 0, 0, 0, 3, 3, 7, 9, 9, 9, 9, 9])
    losses = rng.normal(size=len(groups))
    ids, member, counts = np.unique(groups, return_inverse=True, return_counts=True)
    means = np.bincount(member, weights=losses) / counts
    prior = counts / len(groups)
    for radius in _radii(divergence, len(ids)):
        w = group_worst_case_weights(
            torch.tensor(losses), torch.tensor(groups), divergence, radius
        ).numpy()
        q_group = np.bincount(member, weights=w)
        np.testing.assert_allclose(w, (q_group / counts)[member], rtol=1e-12)  # equal within a group
        if radius == (1.0 if divergence == "cvar" else 0.0):
            continue  # covered bitwise by test_group_radius_zero_is_the_mean_exactly
        _assert_optimal(q_group, means, divergence, radius, prior)


def test_group_radius_zero_is_the_mean_exactly():
    losses = torch.tensor([0.3, 1.2, -0.4, 2.0, 0.1, 0.9, 0.5])
    groups = torch.tensor([2, 2, 2, 5, 5, 1, 2])
    for divergence in DIVERGENCES:
        radius = 1.0 if divergence == "cvar" else 0.0
        w = group_worst_case_weights(losses, groups, divergence, radius)
        assert torch.equal(w, torch.full((7,), 1 / 7))


# ---- properties -------------------------------------------------------------------------------------

LOSSES = st.integers(1, 40).flatmap(
    lambda n: st.one_of(
        st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=64), min_size=n, max_size=n),
        st.lists(st.sampled_from([-2.0, 0.0, 0.5, 3.0]), min_size=n, max_size=n),  # heavy ties
    )
)
RADIUS_FRACTION = st.floats(0.0, 1.0)


def _radius(divergence: str, fraction: float) -> float:
    """Map [0, 1] onto the divergence's range, reaching beyond the vertex at the top end."""
    return {
        "tv": fraction,
        "cvar": max(1.0 - fraction, 1e-3),
        "kl": 5 * fraction,
        "chi2": 25 * fraction,
    }[divergence]


@settings(max_examples=int(os.environ.get("WEIGHTS_EXAMPLES", "60")), deadline=None)
@given(
    values=LOSSES,
    divergence=st.sampled_from(DIVERGENCES),
    fraction=RADIUS_FRACTION,
    seed=st.integers(0, 99),
)
def test_properties(values, divergence, fraction, seed):
    losses = torch.tensor(values, dtype=torch.float64)
    n = len(values)
    radius = _radius(divergence, fraction)
    w = worst_case_weights(losses, divergence, radius)
    assert (w >= 0).all() and abs(w.sum().item() - 1) < 1e-12
    # ties share equally, and permuting the losses permutes the weights
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(
        worst_case_weights(losses[perm], divergence, radius), w[perm], rtol=1e-9, atol=1e-12
    )
    for level in torch.unique(losses):
        tied = w[losses == level]
        assert torch.equal(tied, tied[:1].expand_as(tied))
    # the value is at least the mean and grows with the radius
    value, mean = (w @ losses).item(), losses.mean().item()
    scale = losses.abs().max().item() + 1.0
    assert value >= mean - 1e-12 * scale
    smaller = _radius(divergence, fraction / 2)
    assert robust_value(losses, divergence, smaller).item() <= value + 1e-12 * scale


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nominal_radius_is_uniform_bitwise(divergence, dtype):
    losses = torch.randn(13, dtype=dtype, generator=torch.Generator().manual_seed(0)) * 100
    radius = 1.0 if divergence == "cvar" else 0.0
    assert torch.equal(
        worst_case_weights(losses, divergence, radius), torch.full((13,), 1 / 13, dtype=dtype)
    )
    assert robust_value(losses, divergence, radius).item() == pytest.approx(
        losses.mean().item(), abs=1e-4
    )


# half-precision weights against float32 on the same (rounded) losses: one rounding of each weight (unit
# roundoff 2**-9 for bf16, 2**-12 for fp16), with room for a step; fp16's subnormals below 6e-5 take atol
HALF_TOL = {torch.bfloat16: dict(rtol=2**-7, atol=1e-7), torch.float16: dict(rtol=2**-10, atol=1e-7)}


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_half_precision_losses_match_float32(divergence, dtype, n):
    """bf16/fp16 losses on the CPU (the uniform-prior fast paths of chi2 and cvar included): weights in
    the input's dtype, equal to the float32 weights of the same rounded losses, summing to 1."""
    generator = torch.Generator().manual_seed(n)
    losses = (torch.randn(n, generator=generator) * 3).to(dtype)  # rounding to half precision makes ties
    radii = {
        "tv": (0.0, 0.1, 0.6),
        "kl": (0.0, 0.05, 2.0),
        "chi2": (0.0, 0.3, 20.0),
        "cvar": (1.0, 0.5, 0.05),
    }[divergence]
    for radius in radii:
        weights = worst_case_weights(losses, divergence, radius)
        assert weights.dtype == dtype and weights.shape == (n,)
        expected = worst_case_weights(losses.float(), divergence, radius)
        torch.testing.assert_close(weights.float(), expected, **HALF_TOL[dtype], msg=str(radius))
        assert weights.double().sum().item() == pytest.approx(1.0, abs=2 * HALF_TOL[dtype]["rtol"])


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_beyond_the_vertex_is_uniform_on_the_argmax_set(divergence):
    losses = torch.tensor([0.1, 2.5, -1.0, 2.5, 2.4, 2.5, 0.0, 1.0])
    radius = {"tv": 1.0, "kl": math.log(8 / 3) + 1e-9, "chi2": 0.5 * (8 / 3 - 1) + 1e-9, "cvar": 3 / 8}[
        divergence
    ]
    expected = torch.tensor([0, 1, 0, 1, 0, 1, 0, 0]) / 3.0
    torch.testing.assert_close(
        worst_case_weights(losses, divergence, radius), expected, rtol=0, atol=1e-7
    )
    if divergence != "tv":  # a larger ball changes nothing
        larger = radius / 2 if divergence == "cvar" else radius * 10
        torch.testing.assert_close(
            worst_case_weights(losses, divergence, larger), expected, rtol=0, atol=1e-7
        )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_detached_and_danskin_gradient(divergence):
    losses = torch.randn(10, dtype=torch.float64, requires_grad=True)
    radius = 0.5 if divergence != "tv" else 0.2
    w = worst_case_weights(losses, divergence, radius)
    assert not w.requires_grad and w.grad_fn is None
    robust_value(losses, divergence, radius).backward()
    torch.testing.assert_close(losses.grad, w)


def test_kl_stable_for_large_losses_float32():
    losses = torch.tensor([1e4, 1e4 - 1.0, -1e4, 3.0, 1e4 - 0.5], dtype=torch.float32)
    for radius in (1e-8, 0.01, 0.5):
        w = worst_case_weights(losses, "kl", radius)
        assert w.dtype == torch.float32 and torch.isfinite(w).all()
        q = w.double()
        assert (q * torch.log(q.clamp_min(1e-300) * 5)).sum().item() <= radius * (1 + 1e-5) + 1e-7


def test_validate_radius_returns_float_for_config_dataclasses():
    assert validate_radius("kl", 1) == 1.0 and isinstance(validate_radius("kl", 1), float)
    assert validate_radius("chi2", math.inf) == math.inf
    assert set(DIVERGENCES) == {"tv", "kl", "chi2", "cvar"}


# ---- bad input -------------------------------------------------------------------------------------

GOOD = torch.tensor([0.1, 0.2, 0.3])
BAD_CALLS = [
    (lambda: worst_case_weights(torch.tensor([]), "kl", 0.1), "losses"),
    (lambda: worst_case_weights(torch.ones(2, 2), "kl", 0.1), "losses"),
    (lambda: worst_case_weights(torch.tensor([0.1, math.nan]), "kl", 0.1), "losses"),
    (lambda: worst_case_weights(torch.tensor([0.1, math.inf]), "kl", 0.1), "losses"),
    (lambda: worst_case_weights(torch.tensor([1, 2]), "kl", 0.1), "losses"),
    (lambda: worst_case_weights([0.1, 0.2], "kl", 0.1), "losses"),
    (lambda: worst_case_weights(GOOD, "kl", -0.1), "radius"),
    (lambda: worst_case_weights(GOOD, "chi2", math.nan), "radius"),
    (lambda: worst_case_weights(GOOD, "tv", 1.5), "radius"),
    (lambda: worst_case_weights(GOOD, "cvar", 0.0), "radius"),
    (lambda: worst_case_weights(GOOD, "cvar", 1.2), "radius"),
    (lambda: worst_case_weights(GOOD, "kl", "0.1"), "radius"),
    (lambda: worst_case_weights(GOOD, "kl", 0.1, prior=torch.tensor([0.5, 0.5])), "prior"),
    (lambda: worst_case_weights(GOOD, "kl", 0.1, prior=torch.tensor([0.5, 0.5, 0.5])), "prior"),
    (lambda: worst_case_weights(GOOD, "kl", 0.1, prior=torch.tensor([1.0, 0.0, 0.0])), "prior"),
    (lambda: penalised_weights(GOOD, "kl", 0.0), "reg"),
    (lambda: penalised_value(GOOD, "chi2", -1.0), "reg"),
    (lambda: penalised_weights(GOOD, "tv", 1.0), "divergence"),
    (lambda: group_worst_case_weights(GOOD, torch.tensor([0, 1]), "kl", 0.1), "groups"),
    (lambda: group_worst_case_weights(GOOD, torch.tensor([0.0, 1.0, 1.0]), "kl", 0.1), "groups"),
    (lambda: group_worst_case_weights(GOOD, torch.tensor([0, 1, 1]), "tv", 2.0), "radius"),
    (lambda: validate_radius("chi2", -1), "radius"),
]


@pytest.mark.parametrize("call,argument", BAD_CALLS)
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_unknown_divergence_message_lists_the_allowed_names():
    with pytest.raises(ValueError) as info:
        worst_case_weights(GOOD, "x", 0.1)
    assert str(info.value) == "unknown divergence 'x'; expected one of ['chi2', 'cvar', 'kl', 'tv']"


def test_solve_runs_single_threaded_and_restores_the_callers_threads(monkeypatch):
    from drostudy import _solvers

    seen, original = [], _solvers.SOLVERS["kl"]
    monkeypatch.setitem(
        _solvers.SOLVERS, "kl", lambda *args: seen.append(torch.get_num_threads()) or original(*args)
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        worst_case_weights(torch.randn(50), "kl", 0.1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("divergence", ["kl", "chi2"])
def test_penalised_value_gradient_is_the_weights(divergence):
    losses = torch.randn(12, dtype=torch.float64, requires_grad=True)
    penalised_value(losses, divergence, 0.4).backward()
    torch.testing.assert_close(losses.grad, penalised_weights(losses, divergence, 0.4))


@pytest.mark.parametrize("alpha", [1e-3, 0.1, 0.29, 0.5, 0.77, 0.999])
@pytest.mark.parametrize("ties", [False, True])
def test_cvar_cpu_fast_path_equals_the_general_solver(alpha, ties):
    # The uniform-prior CVaR on CPU runs in numpy; the general (prior-weighted) solver must agree with it.
    losses = torch.rand(257, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    if ties:
        losses[::3] = losses[7]  # a large tied level, at the boundary for some alpha
    fast = _solvers.UNIFORM_CPU_SOLVERS["cvar"](losses, alpha)
    general = _solvers.cvar_weights(losses, torch.full_like(losses, 1 / len(losses)), alpha)
    assert torch.allclose(fast, general, rtol=0, atol=1e-13)  # the general solver sums to 1 +- ~3e-15
    assert torch.equal(worst_case_weights(losses, "cvar", alpha), fast)


@pytest.mark.parametrize("case", ["random", "ties", "levels", "tiny"])
@pytest.mark.parametrize("radius", [1e-9, 1e-3, 0.1, 1.0, 5.0, 100.0])
def test_chi2_cpu_fast_path_equals_the_general_solver(case, radius):
    # Elementwise on the sorted losses (numpy) vs over distinct levels (torch): the same exact weights.
    losses = torch.rand(300, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    if case == "ties":
        losses[::3] = losses[1]
    elif case == "levels":
        losses = torch.round(losses * 3)  # four levels, the top one shared by ~50 elements
    elif case == "tiny":
        losses = losses[:3] * 1e-3
    fast = _solvers.UNIFORM_CPU_SOLVERS["chi2"](losses, radius)
    general = _solvers.chi2_weights(losses, torch.full_like(losses, 1 / len(losses)), radius)
    assert torch.allclose(fast, general, rtol=0, atol=1e-13)
    assert torch.equal(worst_case_weights(losses, "chi2", radius), fast)
