"""Minibatch DRO against the exact robust optimum, on a Bradley-Terry model small enough to solve exactly.

The set-up: prompts come from a mixture of domains; domain k has its own feature distribution and its own
true preference direction theta_k, so domains disagree about which response is better. A pair is one
feature-difference vector x (d,) and a Bradley-Terry label y ~ Bernoulli(sigmoid(theta_k . x)); we store
z = x if the first response won else -x, so the loss of a linear reward model theta is

    l_i(theta) = -log sigmoid(theta . z_i) = softplus(-theta . z_i)          (convex in theta).

The full-data robust objective (docs/methods.md conventions; `l2` keeps its minimiser unique) is

    F(theta) = max_{q in ball(divergence, radius) around 1/n} sum_i q_i l_i(theta) + 0.5 * l2 * |theta|^2.

`solve_full_robust` minimises F exactly with cvxpy, writing the inner max in dual form;
`minibatch_robust_gd` runs the minibatch algorithm of Mandal, Sasnauskas and Radanovic (2025) (exact worst-case weights on each minibatch
from drostudy.weights, the gradient of the weighted loss, a decreasing step size); `gap_curves` records
F(theta_t) - F* against iterations for several batch sizes. The minibatch estimator of F is biased (the
worst case of a small batch is milder than that of the full data), so small batches stall at a floor.
drostudy.toy.domain_shift compares the exact robust and ordinary (ERM) optima under a shift of the domain mix
inside the ball. Everything is float64, seeded and takes seconds on a CPU.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import cvxpy as cp
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from drostudy.progress import tqdm
from drostudy.threads import torch_threads
from drostudy.weights import (
    group_worst_case_weights,
    robust_value,
    validate_radius,
    worst_case_weights,
)

DEFAULT_MIX = (0.6, 0.3, 0.1)  # a majority, a middle and a minority domain
DEFAULT_L2 = 1e-2  # small: only there to make the optimum unique


class Domains(NamedTuple):
    """means (K, d): each domain's feature mean; directions (K, d): its true preference direction."""

    means: np.ndarray
    directions: np.ndarray


class PreferenceData(NamedTuple):
    """z (n, d) float64: label-oriented feature differences; domain (n,) int64: the domain of each pair."""

    z: torch.Tensor
    domain: torch.Tensor

    @property
    def mix(self) -> np.ndarray:
        """Empirical domain proportions (K,)."""
        return np.bincount(self.domain.numpy()).astype(float) / len(self.domain)


def make_domains(
    n_domains: int = 3, dim: int = 5, strength: float = 4.0, spread: float = 90.0, seed: int = 0
) -> Domains:
    """Domains whose preference directions are `strength`-long and spread over `spread` degrees in a plane.

    Domain 0 (the majority in DEFAULT_MIX) and the last one disagree most: a model fit to the mix leans
    to the majority and does worst on the minority, the case robustness is meant for. (At 150 degrees
    every robust model at radius 0.2 collapses to the constant predictor theta = 0.)
    """
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, 2)))  # (d, 2) orthonormal plane
    angles = np.linspace(0.0, np.deg2rad(spread), n_domains)
    directions = strength * (
        np.cos(angles)[:, None] * basis[:, 0] + np.sin(angles)[:, None] * basis[:, 1]
    )
    means = 0.5 * rng.standard_normal((n_domains, dim))  # domains also differ in their features
    return Domains(means=means, directions=directions)


def sample_preferences(
    domains: Domains, n: int, mix: tuple[float, ...] = DEFAULT_MIX, seed: int = 0
) -> PreferenceData:
    """n pairs with exactly round(mix_k * n) from domain k (the last domain takes the rounding rest)."""
    mix = np.asarray(mix, dtype=float)
    if mix.shape != (len(domains.means),) or (mix < 0).any() or not math.isclose(mix.sum(), 1.0):
        raise ValueError(
            f"mix must be {len(domains.means)} non-negative proportions summing to 1; got {mix}"
        )
    counts = np.floor(mix * n).astype(int)
    counts[-1] = n - counts[:-1].sum()
    rng = np.random.default_rng(seed)
    domain = np.repeat(np.arange(len(mix)), counts)
    x = domains.means[domain] + rng.standard_normal((n, domains.means.shape[1]))  # (n, d)
    p_first = 1.0 / (1.0 + np.exp(-(x * domains.directions[domain]).sum(1)))  # Bradley-Terry, (n,)
    first_wins = rng.random(n) < p_first
    z = np.where(first_wins[:, None], x, -x)
    return PreferenceData(z=torch.from_numpy(z), domain=torch.from_numpy(domain))


def pair_losses(theta: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry losses (n,) of the linear reward model `theta` (d,) on pairs `z` (n, d)."""
    return F.softplus(-(z @ theta))


def _robust_dual(
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
    if radius == (1.0 if divergence == "cvar" else 0.0):
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


LEVELS = ("example", "domain")


def _check_level(level: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {list(LEVELS)}")


def robust_objective(
    theta: torch.Tensor | np.ndarray,
    data: PreferenceData,
    divergence: str,
    radius: float,
    l2: float,
    level: str = "example",
) -> float:
    """F(theta): the full-data robust loss (exact weights from drostudy.weights) + 0.5 l2 |theta|^2.

    level "example": the ball is over pairs (Mandal et al., 2025); "domain": over the domain mix, around the
    empirical domain proportions (group DRO).
    """
    _check_level(level)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    losses = pair_losses(theta, data.z)
    if level == "example":
        value = robust_value(losses, divergence, radius)
    else:
        value = (group_worst_case_weights(losses, data.domain, divergence, radius) * losses).sum()
    return float(value) + 0.5 * l2 * float(theta @ theta)


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
    _check_level(level)
    z, n = data.z.numpy(), len(data.z)
    theta = cp.Variable(z.shape[1])
    losses = cp.logistic(-z @ theta)  # softplus(-theta . z), (n,)
    if level == "example":
        robust, constraints = _robust_dual(losses, divergence, radius, np.full(n, 1.0 / n))
    else:
        member = np.eye(len(data.mix))[data.domain.numpy()].T  # (K, n) one-hot
        domain_means = (member / member.sum(1, keepdims=True)) @ losses  # (K,)
        robust, constraints = _robust_dual(domain_means, divergence, radius, data.mix)
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


def minibatch_robust_gd(
    data: PreferenceData,
    divergence: str,
    radius: float,
    batch_size: int,
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    n_evals: int = 40,
    progress: bool = False,
    level: str = "example",
    theta0: np.ndarray | None = None,
) -> list[dict]:
    """Minibatch robust gradient descent from `theta0` (default 0); returns the full objective's history.

    Step t: draw `batch_size` pairs without replacement, w = worst_case_weights(l_B, divergence, radius)
    (detached), step along -(sum_i w_i grad l_i + l2 theta) with lr / sqrt(t). The guarantee is for the
    running average of the iterates, so both are evaluated. History rows, at `n_evals` log-spaced steps:
    {"step", "batch_size", "objective": F(theta_t), "avg_objective": F(mean of theta_1..theta_t)}.
    """
    validate_radius(divergence, radius)
    _check_level(level)
    n, dim = data.z.shape
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}]; got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    theta = torch.zeros(dim, dtype=torch.float64) if theta0 is None else torch.as_tensor(theta0).double()
    theta_sum = torch.zeros(dim, dtype=torch.float64)
    evals = set(np.unique(np.geomspace(1, steps, n_evals).round().astype(int)).tolist())
    history = []
    with torch_threads(1):  # (B,)-sized tensors: extra threads only add overhead
        for step in tqdm(range(1, steps + 1), disable=not progress, desc=f"batch {batch_size}"):
            batch = torch.randperm(n, generator=generator)[:batch_size]
            z = data.z[batch]  # (B, d)
            margins = z @ theta  # (B,)
            if level == "example":
                weights = worst_case_weights(F.softplus(-margins), divergence, radius)  # (B,)
            else:
                weights = group_worst_case_weights(
                    F.softplus(-margins), data.domain[batch], divergence, radius
                )
            grad = -(weights * torch.sigmoid(-margins)) @ z + l2 * theta  # (d,)
            theta = theta - lr / math.sqrt(step) * grad
            theta_sum += theta
            if step in evals:
                history.append(
                    {
                        "step": step,
                        "batch_size": batch_size,
                        "objective": robust_objective(theta, data, divergence, radius, l2, level),
                        "avg_objective": robust_objective(
                            theta_sum / step, data, divergence, radius, l2, level
                        ),
                    }
                )
    return history


def gap_curves(
    data: PreferenceData,
    divergence: str,
    radius: float,
    batch_sizes: tuple[int, ...],
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> tuple[pd.DataFrame, float]:
    """Histories of `minibatch_robust_gd` for each batch size, with gap = F - F*; and F* itself.

    Every run starts from the ordinary (ERM) optimum, as robust fine-tuning starts from an ordinarily
    trained model (from theta = 0 the TV and CVaR runs would start next to their optimum: at radius 0.2
    both are close to the constant predictor).
    Columns: step, batch_size, objective, avg_objective, gap, avg_gap. Gaps are >= 0 up to the solver's
    tolerance (F* is the exact optimum).
    """
    _, optimum = solve_full_robust(data, divergence, radius, l2)
    theta0, _ = solve_full_robust(data, "tv", 0.0, l2)
    rows = []
    for batch_size in batch_sizes:
        rows += minibatch_robust_gd(
            data, divergence, radius, batch_size, steps, lr, seed, l2, theta0=theta0
        )
    table = pd.DataFrame(rows)
    table["gap"] = table["objective"] - optimum
    table["avg_gap"] = table["avg_objective"] - optimum
    return table, optimum


def batch_size_study(
    data: PreferenceData,
    divergences: tuple[str, ...],
    radius: float,
    batch_sizes: tuple[int, ...],
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """`gap_curves` for each divergence: one table with a `divergence` column, and F* per divergence."""
    tables, optima = [], {}
    for divergence in divergences:
        table, optima[divergence] = gap_curves(
            data, divergence, radius, batch_sizes, steps, lr, seed, l2
        )
        tables.append(table.assign(divergence=divergence))
    return pd.concat(tables, ignore_index=True), optima


def final_gaps(table: pd.DataFrame) -> dict[str, dict[int, float]]:
    """{divergence: {batch_size: gap of the averaged iterate at the last step}} from `batch_size_study`."""
    last = table[table.step == table.step.max()]
    return {
        divergence: {int(b): float(g) for b, g in zip(part.batch_size, part.avg_gap, strict=True)}
        for divergence, part in last.groupby("divergence")
    }
