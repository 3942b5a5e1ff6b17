"""The toy's preference data: Bradley-Terry pairs from a mixture of domains, and its robust objective.

Prompts come from a mixture of domains; domain k has its own feature distribution and its own true
preference direction theta_k, so domains disagree about which response is better. A pair is one
feature-difference vector x (d,) and a Bradley-Terry label y ~ Bernoulli(sigmoid(theta_k . x)); we store
z = x if the first response won else -x, so the loss of a linear reward model theta is

    l_i(theta) = -log sigmoid(theta . z_i) = softplus(-theta . z_i)          (convex in theta).

The full-data robust objective (docs/methods.md conventions; `l2` keeps its minimiser unique) is

    F(theta) = max_{q in ball(divergence, radius) around 1/n} sum_i q_i l_i(theta) + 0.5 * l2 * |theta|^2,

evaluated exactly by `robust_objective` (weights from drostudy.weights); at level "group" the ball is over
the domain mix instead. drostudy.toy.exact minimises F, drostudy.toy.convergence approaches it by
minibatches. Everything is float64 and seeded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from drostudy.weights import LEVELS, group_worst_case_weights, robust_value

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


def check_level(level: str) -> None:
    """Raise ValueError unless `level` is one of drostudy.weights.LEVELS."""
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

    level "example": the ball is over pairs (Mandal et al., 2025); "group": over the domain mix, around the
    empirical domain proportions (group DRO, the domains as the groups).
    """
    check_level(level)
    theta = torch.as_tensor(theta, dtype=torch.float64)
    losses = pair_losses(theta, data.z)
    if level == "example":
        value = robust_value(losses, divergence, radius)
    else:
        value = (group_worst_case_weights(losses, data.domain, divergence, radius) * losses).sum()
    return float(value) + 0.5 * l2 * float(theta @ theta)
