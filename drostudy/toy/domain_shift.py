"""Does a robust model hold up when the domain mix shifts inside the ball? Exact optima, fresh data.

On the synthetic Bradley-Terry domains of drostudy.toy.preferences: the ordinary (ERM) model, Mandal et al.'s
robust model (ball over pairs) and a group-robust one (ball over the domain mix) are solved exactly, then
scored per domain on fresh data and under the in-ball shift of the domain mix that hurts the ordinary model
most. `mix_divergence` / `in_ball` say how far a mix is from the training mix in each divergence.
"""

from __future__ import annotations

import numpy as np
import torch

from drostudy.toy.exact import solve_full_robust
from drostudy.toy.preferences import (
    DEFAULT_L2,
    Domains,
    PreferenceData,
    pair_losses,
    sample_preferences,
)
from drostudy.weights import DIVERGENCES, worst_case_weights

_F_DIVERGENCE = {
    "tv": lambda t: 0.5 * np.abs(t - 1.0),
    "kl": lambda t: np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0),
    "chi2": lambda t: 0.5 * (t - 1.0) ** 2,
}


def mix_divergence(mix: np.ndarray, nominal: np.ndarray, divergence: str) -> float:
    """D(mix || nominal) for an f-divergence; for cvar the smallest alpha whose ball holds `mix`.

    A shift of the domain mix, spread uniformly within each domain, has the same divergence from the
    uniform distribution over examples as `mix` has from the empirical domain proportions `nominal`.
    """
    mix, nominal = np.asarray(mix, dtype=float), np.asarray(nominal, dtype=float)
    if divergence == "cvar":  # q_i <= u_i / alpha  <=>  alpha <= min nominal / mix
        return float(np.min(np.where(mix > 0, nominal / np.where(mix > 0, mix, 1.0), np.inf)))
    if divergence not in _F_DIVERGENCE:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {list(DIVERGENCES)}")
    return float(np.sum(nominal * _F_DIVERGENCE[divergence](mix / nominal)))


def in_ball(mix: np.ndarray, nominal: np.ndarray, divergence: str, radius: float) -> bool:
    """Whether the domain mix `mix` lies in the ball of `radius` around `nominal` (to 1e-9 relative)."""
    value = mix_divergence(mix, nominal, divergence)
    slack = 1e-9 * max(radius, 1.0)
    return value >= radius - slack if divergence == "cvar" else value <= radius + slack


def domain_losses(
    theta: np.ndarray, domains: Domains, n_per_domain: int = 20000, seed: int = 1
) -> np.ndarray:
    """Expected Bradley-Terry loss (K,) of `theta` on each domain, from a fresh sample of each."""
    k = len(domains.means)
    fresh = sample_preferences(domains, n_per_domain * k, tuple([1.0 / k] * k), seed=seed)
    losses = pair_losses(torch.as_tensor(theta, dtype=torch.float64), fresh.z).numpy()
    return np.bincount(fresh.domain.numpy(), weights=losses) / np.bincount(fresh.domain.numpy())


def domain_shift_check(
    data: PreferenceData,
    domains: Domains,
    divergence: str,
    radius: float,
    l2: float = DEFAULT_L2,
    seed: int = 1,
) -> dict:
    """Ordinary vs robust models under the in-ball domain shift that hurts the ordinary model most.

    Models (exact optima by cvxpy): "ordinary" (ERM), "robust" (ball over pairs, Mandal et al., 2025) and
    "group" (ball over the domain mix). The shift is the ordinary model's worst domain mix in the
    ball around the training mix (exact, from drostudy.weights with the mix as prior), checked separately
    to lie inside; spread uniformly within domains it is inside the pair-level ball too. Losses are
    measured on fresh data (`seed`). Returns the mixes, the shift's divergence and, per model, per-domain,
    nominal-mix, shifted-mix and worst-domain losses.
    """
    thetas = {
        "ordinary": solve_full_robust(data, "tv", 0.0, l2)[0],
        "robust": solve_full_robust(data, divergence, radius, l2, "example")[0],
        "group": solve_full_robust(data, divergence, radius, l2, "group")[0],
    }
    per_domain = {name: domain_losses(theta, domains, seed=seed) for name, theta in thetas.items()}
    nominal = data.mix
    shifted = worst_case_weights(
        torch.from_numpy(per_domain["ordinary"]), divergence, radius, prior=torch.from_numpy(nominal)
    ).numpy()
    if not in_ball(shifted, nominal, divergence, radius):
        raise RuntimeError("the constructed shift left the ball")  # the weights are exact: a bug
    return {
        "nominal_mix": nominal.tolist(),
        "shifted_mix": shifted.tolist(),
        "shift_divergence": mix_divergence(shifted, nominal, divergence),
        "per_domain": {name: losses.tolist() for name, losses in per_domain.items()},
        "nominal_loss": {name: float(nominal @ losses) for name, losses in per_domain.items()},
        "shifted_loss": {name: float(shifted @ losses) for name, losses in per_domain.items()},
        "worst_domain_loss": {name: float(losses.max()) for name, losses in per_domain.items()},
    }
