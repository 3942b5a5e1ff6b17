"""The exact robust optimum of the toy: argmin_theta F(theta) by cvxpy, the inner max in dual form.

F is drostudy.toy.preferences' robust objective. `robust_dual` writes max_{q in ball} sum_i q_i l_i as a
convex expression of the losses (a min over dual variables), so minimising over theta and the duals at
once is one convex problem; `solve_full_robust` solves it (Clarabel, with fallbacks) and checks the
solver's value against F at its theta with the exact weights.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np

from drostudy.toy.preferences import DEFAULT_L2, PreferenceData, check_level, robust_objective
from drostudy.weights import ball_is_point, validate_radius


def robust_dual(
    losses: cp.Expression, divergence: str, radius: float, prior: np.ndarray
) -> tuple[cp.Expression, list]:
    """max_{q in ball around prior} sum q_i l_i as a convex expression of `losses` (m,) (a min over duals).

    tv:   (1 - r) CVaR_{1-r}(l) + r max(l): the worst case moves r of the mass from the lowest losses to
          the largest one, and the mass left is the upper (1 - r) tail.
    cvar: Rockafellar-Uryasev, min_eta eta + E_prior (l - eta)_+ / alpha.
    chi2: min_eta eta + sqrt(1 + 2 r) * sqrt(E_prior (l - eta)_+^2)  (f(t) = 0.5 (t - 1)^2).
    kl:   min_{lam >= 0} lam r + lam log E_prior exp(l / lam), as exponential cones.
    """
    eta = cp.Variable()
    if ball_is_point(divergence, radius):
        return prior @ losses, []
    if divergence == "tv":
        if radius == 1.0:
            return cp.max(losses), []
        return (1 - radius) * eta + prior @ cp.pos(losses - eta) + radius * cp.max(losses), []
    if divergence == "cvar":
        return eta + prior @ cp.pos(losses - eta) / radius, []
    if divergence == "chi2":
        tail = cp.multiply(np.sqrt(prior), cp.pos(losses - eta))
        return eta + math.sqrt(1 + 2 * radius) * cp.norm(tail, 2), []
    m = losses.shape[0]
    lam, upper, v = cp.Variable(nonneg=True), cp.Variable(m), cp.Variable(m)
    # lam log E_prior exp(l / lam) <= eta  <=>  E_prior lam exp((l - eta) / lam) <= lam. Written with
    # the prior's mean (not n times it): Clarabel stalls on the unscaled sum for n in the thousands.
    constraints = [upper >= losses, cp.ExpCone(upper - eta, lam * np.ones(m), v), prior @ v <= lam]
    return lam * radius + eta, constraints


# Clarabel first (fast); at degenerate optima it can stall, where turning off its equilibration or the
# slower first-order SCS still converge.
_SOLVER_ATTEMPTS = (
    dict(solver=cp.CLARABEL),
    dict(solver=cp.CLARABEL, equilibrate_enable=False),
    dict(solver=cp.SCS, eps=1e-8, max_iters=100_000),
)


def solve_full_robust(
    data: PreferenceData, divergence: str, radius: float, l2: float = DEFAULT_L2, level: str = "example"
) -> tuple[np.ndarray, float]:
    """argmin_theta F(theta) (d,) and F* by cvxpy (Clarabel); radius 0 (cvar: 1) is the ordinary fit."""
    radius = validate_radius(divergence, radius)
    check_level(level)
    z, n = data.z.numpy(), len(data.z)
    theta = cp.Variable(z.shape[1])
    losses = cp.logistic(-z @ theta)  # softplus(-theta . z), (n,)
    if level == "example":
        robust, constraints = robust_dual(losses, divergence, radius, np.full(n, 1.0 / n))
    else:
        member = np.eye(len(data.mix))[data.domain.numpy()].T  # (K, n) one-hot
        domain_means = (member / member.sum(1, keepdims=True)) @ losses  # (K,)
        robust, constraints = robust_dual(domain_means, divergence, radius, data.mix)
    problem = cp.Problem(cp.Minimize(robust + 0.5 * l2 * cp.sum_squares(theta)), constraints)
    exact = None
    for options in _SOLVER_ATTEMPTS:
        with warnings.catch_warnings():
            # "optimal_inaccurate" (Clarabel: AlmostSolved) happens where the optimum sits on a kink with
            # many tied losses (theta = 0 for large radii), at a duality gap ~1e-8: checked below instead.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            try:
                problem.solve(**options)
            except cp.error.SolverError:
                continue
        if problem.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
            # F at the solver's theta with the exact weights (so gaps compare like with like) must match
            # the solver's own value: an unconverged solve or a wrong dual form fails here.
            exact = robust_objective(theta.value, data, divergence, radius, l2, level)
            if abs(exact - problem.value) <= 1e-5 * max(1.0, abs(exact)):
                break
            exact = None
    if exact is None:
        raise RuntimeError(f"cvxpy could not solve the {divergence} problem (radius {radius}, {level})")
    return theta.value, exact
