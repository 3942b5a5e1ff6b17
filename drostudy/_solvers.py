"""Exact worst-case distributions over a divergence ball around a general nominal distribution `prior`.

Private: `drostudy.weights` validates input, casts to float64 and calls these. Every solver takes
`losses` (n,) float64 and `prior` (n,) float64 (positive, summing to 1) and returns q (n,) float64 on the
same device. Ties share mass in proportion to `prior` (so equally for the uniform prior): every weight is a
function of the element's own loss and of a few shared scalars. The nominal case (radius 0, CVaR alpha 1)
is handled by the caller, which returns `prior` untouched.

The uniform-prior fast paths on CPU (cvar, chi2) are in drostudy._cpu_solvers; `UNIFORM_CPU_SOLVERS` is
re-exported here, so that drostudy.weights finds every solver table in one module.

Notation: r = q / p is the likelihood ratio, E_p the prior mean, "levels" the distinct loss values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from drostudy._cpu_solvers import UNIFORM_CPU_SOLVERS  # noqa: F401 (re-exported: see above)

# The KL root-finder stops when KL is within a few ulps of the radius, when the bracket on t is that narrow,
# or when the Newton correction to log t is below 1e-13 (there KL is at its summation noise, ~1e-13 rel).
_KL_RTOL = 4e-16
_NEWTON_STEP_TOL = 1e-13
_KL_MAX_ITER = 200


def _levels(losses: Tensor, prior: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct values ascending (K,), each element's level index (n,), prior mass per level (K,)."""
    if losses.device.type == "cpu":
        # torch 2.13's CPU sort is ~5x slower than numpy's at n = 65536; on CPU the arrays share memory.
        values_np, index_np = np.unique(losses.numpy(), return_inverse=True)
        values, index = torch.from_numpy(values_np), torch.from_numpy(index_np.reshape(-1))
    else:
        values, index = torch.unique(losses, sorted=True, return_inverse=True)
    mass = torch.bincount(index, weights=prior, minlength=len(values)).to(prior.dtype)
    return values, index, mass


def _vertex(prior: Tensor, top: Tensor) -> Tensor:
    """All mass on the argmax set, shared in proportion to the prior."""
    on_top = torch.where(top, prior, torch.zeros_like(prior))
    return on_top / on_top.sum()


def tv_weights(losses: Tensor, prior: Tensor, radius: float) -> Tensor:
    """0.5 * sum |q - p| <= radius: move `radius` of mass from the lowest losses onto the argmax set."""
    values, index, mass = _levels(losses, prior)
    top = index == len(values) - 1
    if radius >= 1.0 - mass[-1].item():  # the whole ball's reach: nothing left below the maximum
        return _vertex(prior, top)
    # Remove mass level by level from the bottom: a level loses min(mass, what is still to be removed).
    below = torch.cumsum(mass, 0) - mass  # (K,) prior mass strictly below each level
    removed = ((radius - below) / mass).clamp(0.0, 1.0)  # (K,) fraction of each level taken away
    ratio = torch.where(top, 1.0 + radius / mass[-1], 1.0 - removed[index])
    return prior * ratio


def cvar_weights(losses: Tensor, prior: Tensor, alpha: float) -> Tensor:
    """q <= p / alpha: fill the highest losses up to the cap; the boundary level is filled fractionally."""
    values, index, mass = _levels(losses, prior)
    # (K,) prior mass above each level, summed from the top so that the top level's is exactly 0
    above = torch.flip(torch.cumsum(torch.flip(mass, [0]), 0), [0]) - mass
    filled = ((alpha - above) / mass).clamp(0.0, 1.0)  # (K,) fraction of each level's cap used
    return prior * (filled / alpha)[index]


def _kl_tilt(
    t: float, prior: Tensor, log_prior: Tensor, scaled: Tensor, from_top: Tensor
) -> tuple[float, float, Tensor]:
    """KL(q_t || p), its slope d KL / d log t and q_t ∝ p exp(t s) for `kl_weights` (shapes (n,)): small t
    from the prior-centred `scaled` losses, large t from `from_top` (the same losses shifted to max 0)."""
    if t <= 1.0:
        a = t * scaled  # (n,) in [-1, 1]
        excess = torch.dot(prior, torch.expm1(a))
        log_z = torch.log1p(excess)
        q = prior * torch.exp(a) / (1.0 + excess)
    else:
        a = t * from_top  # (n,) <= 0
        logits = log_prior + a
        shift = logits.max()  # softmax and logsumexp from one exp
        q = torch.exp(logits - shift)
        total = q.sum()
        q /= total
        log_z = shift + torch.log(total)
    mean = torch.dot(q, a)
    # The slope only steers Newton (the bracket guarantees convergence): one-pass variance suffices.
    slope = torch.dot(q, a * a) - mean**2  # d KL / d log t = t^2 Var_q(s)
    kl_value, slope_value = torch.stack([mean - log_z, slope]).tolist()
    return kl_value, slope_value, q


def kl_weights(losses: Tensor, prior: Tensor, radius: float) -> Tensor:
    """sum q log(q/p) <= radius: q ∝ p exp(t l) with the inverse temperature t from a 1-D monotone root.

    KL(q_t || p) rises from 0 (t = 0) to -log P(argmax) (t -> inf), with d KL / d log t = t^2 Var_q(l).
    Safeguarded Newton in log t (a bracket that Newton steps must stay inside, else bisection) converges to
    machine precision in ~5-15 steps; each step is O(n) vectorised work.
    """
    highest, lowest = losses.max(), losses.min()  # no sort needed: only the argmax set matters
    if highest == lowest:
        return _vertex(prior, losses == highest)
    # Scale to unit range and centre at the prior mean, so t is dimensionless. KL(q_t || p) =
    # E_q[a] - log E_p[exp(a)] with a = t (s - c) holds for any shift c; to keep the difference precise,
    # small t uses c = the prior mean (both terms O(t^2); log1p/expm1 keep it for t ~ 1e-5) and large t
    # uses c = max (the top's log-ratio -log E_p[exp(a)] is then O(1), not a difference of two O(t) terms).
    scaled = (losses - highest) / (highest - lowest)
    scaled = scaled - (prior * scaled).sum()
    from_top = scaled - scaled.max()
    # The argmax set as this arithmetic sees it: a loss within rounding of the max (4e-85 vs 0 next to -1)
    # ties with it, no temperature separates them, and KL(q_t || p) never exceeds -log P(that set).
    top = from_top == 0
    top_mass = torch.where(top, prior, torch.zeros_like(prior)).sum().item()
    if radius >= -math.log(top_mass):
        return _vertex(prior, top)
    log_prior = torch.log(prior)
    variance = torch.dot(prior, scaled**2).item()
    t = math.sqrt(2.0 * radius / variance)  # KL ≈ t^2 Var_p / 2 for small t
    lo, hi = 0.0, math.inf
    for _ in range(_KL_MAX_ITER):
        kl, slope, q = _kl_tilt(t, prior, log_prior, scaled, from_top)
        gap = kl - radius
        if gap > 0:
            hi = t
        else:
            lo = t
        if abs(gap) <= _KL_RTOL * radius or (hi - lo <= _KL_RTOL * hi < math.inf):
            break
        step = -gap / slope if slope > 0 else math.inf
        if abs(step) <= _NEWTON_STEP_TOL:  # log t is right to ~1e-13: the rest is summation noise
            break
        candidate = t * math.exp(max(min(step, 4.0), -4.0))  # plateaus make long Newton steps wild
        if not lo < candidate < hi:  # Newton left the bracket: bisect (geometrically) instead
            candidate = 4.0 * lo if math.isinf(hi) else (0.5 * hi if lo == 0 else math.sqrt(lo * hi))
        if candidate == t:
            break
        t = candidate
    return q


def chi2_weights(losses: Tensor, prior: Tensor, radius: float) -> Tensor:
    """0.5 * E_p[(q/p - 1)^2] <= radius: q ∝ p (l - eta)_+, eta in closed form on the sorted levels.

    With the top-k levels active, E_p[r^2] = 1 + 2 radius reads (mu_k - eta)^2 (kappa S0_k - 1) = V_k, where
    kappa = 1 + 2 radius and S0_k, mu_k, V_k are the prior mass, mean and variance of those levels. The
    right k is the first one whose next level would be inactive; it is found from prefix sums over levels.
    """
    values, index, mass = _levels(losses, prior)
    top = index == len(values) - 1
    kappa = 1.0 + 2.0 * radius
    # E_p[r^2] at the vertex is 1 / P(argmax); one level (all losses equal) is its own vertex even when the
    # prior's float sum falls a hair below 1 and kappa rounds to 1 (radius ~1e-25)
    if len(values) == 1 or kappa * mass[-1].item() >= 1.0:
        return _vertex(prior, top)
    scaled_values = (values - values[-1]) / (values[-1] - values[0])  # (K,) in [-1, 0]
    desc, mass_desc = scaled_values.flip(0), mass.flip(0)
    s0 = torch.cumsum(mass_desc, 0)  # (K,) mass of the top-k levels
    mu = torch.cumsum(mass_desc * desc, 0) / s0
    var = (torch.cumsum(mass_desc * desc**2, 0) / s0 - mu**2).clamp_min(0.0)
    # Level k+1 is active iff psi(eta = v_{k+1}) > kappa, with psi = E[(l-eta)_+^2] / E[(l-eta)_+]^2 over
    # the top-k levels; psi falls as k grows, so the active count is 1 + the number of such k.
    gap = mu[:-1] - desc[1:]  # (K-1,) > 0
    psi = ((gap**2 + var[:-1]) / (s0[:-1] * gap**2)).nan_to_num(math.inf)
    active = 1 + int((psi > kappa).sum().item())
    # Recompute the active levels' moments directly (two-pass) rather than from prefix-sum differences.
    scaled = (losses - values[-1]) / (values[-1] - values[0])
    keep = index >= len(values) - active
    p_on = torch.where(keep, prior, torch.zeros_like(prior))
    s0_k = p_on.sum()
    mu_k = (p_on * scaled).sum() / s0_k
    var_k = (p_on * (scaled - mu_k) ** 2).sum() / s0_k
    # kappa S0 - 1 written as 2 radius S0 - (inactive mass): exact when all are active and radius is tiny.
    denominator = 2.0 * radius * s0_k - torch.where(keep, 0.0, prior).sum()
    eta = mu_k - torch.sqrt(var_k / denominator.clamp_min(1e-300))
    unnormalised = prior * (scaled - eta).clamp_min(0.0)
    return unnormalised / unnormalised.sum()


def trim_top(losses: Tensor, mass: Tensor, fraction: float) -> Tensor:
    """DORO's clean nominal distribution: `mass` (n,) (positive, any total) with `fraction` of its total
    removed from the largest losses, renormalised to sum 1 (n,); zero on what is removed.

    The removal runs level by level from the top; the boundary level loses part of its mass, shared in
    proportion to `mass` (equally among ties under uniform masses, so the result is permutation-equivariant).
    A level that the removal empties, or leaves untouched, up to 1e-12 of the total counts as exactly so:
    fraction * total carries a rounding (0.29 * 100 is 28.999999999999996), and a level left with ~1e-16 of
    its mass would stay in the support, where the TV worst case moves the ball's mass onto its maximum.
    Pass unit masses for the uniform prior: the level masses are then exact integers.
    """
    _, index, level_mass = _levels(losses, mass)
    total = level_mass.sum()
    # (K,) mass strictly above each level, summed from the top so that the top level's is exactly 0
    above = torch.flip(torch.cumsum(torch.flip(level_mass, [0]), 0), [0]) - level_mass
    # (K,) mass removed from each level: what is still to remove when the level is reached, at most all
    taken = torch.minimum((fraction * total - above).clamp_min(0.0), level_mass)
    tol = 1e-12 * total
    taken = torch.where(taken <= tol, 0.0, torch.where(level_mass - taken <= tol, level_mass, taken))
    kept = mass * (1.0 - taken / level_mass)[index]
    return kept / kept.sum()


def kl_penalised_weights(losses: Tensor, prior: Tensor, reg: float) -> Tensor:
    """argmax_q sum q l - reg * KL(q || p): q ∝ p exp(l / reg) (a prior-weighted softmax)."""
    # Shift by the max before dividing: l / reg itself overflows for reg ~ 1e-305.
    return torch.softmax(torch.log(prior) + (losses - losses.max()) / reg, 0)


def chi2_penalised_weights(losses: Tensor, prior: Tensor, reg: float) -> Tensor:
    """argmax_q sum q l - reg * 0.5 E_p[(q/p - 1)^2]: q = p ((l - eta) / reg)_+ with E_p[(l - eta)_+] = reg.

    E_p[(l - eta)_+] is piecewise linear and decreasing in eta; on the piece where the top-k levels are
    active it equals S1_k - eta S0_k, so eta = (S1_k - reg) / S0_k for the first k whose next level would
    stay inactive.
    """
    values, index, mass = _levels(losses, prior)
    if len(values) == 1:
        return prior.clone()
    span = values[-1] - values[0]
    desc, mass_desc = ((values - values[-1]) / span).flip(0), mass.flip(0)
    scaled_reg = reg / span
    s0 = torch.cumsum(mass_desc, 0)
    s1 = torch.cumsum(mass_desc * desc, 0)
    excess_at_next = s1[:-1] - desc[1:] * s0[:-1]  # (K-1,) E_p[(l - v_{k+1})_+] over the top-k levels
    active = 1 + int((excess_at_next < scaled_reg).sum().item())
    scaled = (losses - values[-1]) / span
    keep = index >= len(values) - active
    p_on = torch.where(keep, prior, torch.zeros_like(prior))
    eta = ((p_on * scaled).sum() - scaled_reg) / p_on.sum()
    unnormalised = prior * (scaled - eta).clamp_min(0.0)
    return unnormalised / unnormalised.sum()


def chi2_divergence(q: Tensor, prior: Tensor) -> Tensor:
    """0.5 * E_p[(q/p - 1)^2] (scalar)."""
    return 0.5 * (prior * (q / prior - 1.0) ** 2).sum()


SOLVERS = {"chi2": chi2_weights, "cvar": cvar_weights, "kl": kl_weights, "tv": tv_weights}
PENALISED_SOLVERS = {"chi2": chi2_penalised_weights, "kl": kl_penalised_weights}
