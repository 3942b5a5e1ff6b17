"""Fast paths of the exact worst case under the uniform prior on CPU, in numpy (cvar and chi2).

Private, like drostudy._solvers: `drostudy.weights` picks these for a uniform prior on CPU, and the
general solvers of drostudy._solvers for the rest. At the minibatch sizes training uses (n ~ 64-4096),
fixed torch op overhead dominates the general solvers' cost; these give the same weights from one sort
(checked by tests/test_weights.py). Each takes `losses` (n,) (any floating dtype; NaN/inf raise) and
returns q (n,) float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _cpu_array(losses: Tensor) -> np.ndarray:
    """`losses` as a numpy array for the CPU fast paths: float32/float64 share memory (no copy); other
    floating dtypes (bf16, which numpy lacks, and fp16) are computed in float64."""
    x = losses.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float64)
    return x.numpy()


def cvar_uniform_cpu_weights(losses: Tensor, alpha: float) -> Tensor:
    """CVaR under the uniform prior: the weights of drostudy._solvers.cvar_weights from one sort.

    `losses` (n,) may hold NaN/inf: they are caught from the sorted ends, without a full pass.

    Each of the k = alpha n largest losses gets 1/k; the level at the boundary shares what is left
    equally.
    """
    x = _cpu_array(losses)
    n, k = x.size, alpha * x.size
    order = np.argsort(x)
    ascending = x[order]
    if not (math.isfinite(ascending[0]) and math.isfinite(ascending[-1])):
        raise ValueError("losses must be finite; got NaN or inf")
    # position (ascending) of the boundary: the int(k)-th largest, 0-based
    at = n - 1 - min(int(k), n - 1)
    boundary = ascending[at]
    if (at == 0 or ascending[at - 1] < boundary) and (at == n - 1 or ascending[at + 1] > boundary):
        q = np.zeros(n)  # the usual case, no tie at the boundary: index the sorted order directly
        q[order[at + 1 :]] = 1.0 / k
        q[order[at]] = (k - (n - 1 - at)) / k
        return torch.from_numpy(q)
    low, high = np.searchsorted(ascending, boundary), np.searchsorted(ascending, boundary, "right")
    share = (k - (n - high)) / (k * (high - low))  # for each element tied at the boundary, < 1/k
    q = np.where(x > boundary, 1.0 / k, 0.0)
    if share > 0:
        q[x == boundary] = share
    return torch.from_numpy(q)


def chi2_uniform_cpu_weights(losses: Tensor, radius: float) -> Tensor:
    """chi2 under the uniform prior: the weights of drostudy._solvers.chi2_weights from one sort.

    Works on the sorted elements rather than distinct levels: the active set is
    still a top-k set (ties fall on the same side of eta), found from the same psi test.
    """
    x = _cpu_array(losses)
    n = x.size
    desc = np.sort(x)[::-1]
    top, bottom = desc[0], desc[-1]
    if not (math.isfinite(top) and math.isfinite(bottom)):
        raise ValueError("losses must be finite; got NaN or inf")
    kappa = 1.0 + 2.0 * radius
    on_top = x == top
    n_top = int(np.count_nonzero(on_top))
    if kappa * n_top >= n:  # E_p[r^2] at the vertex is n / n_top
        return torch.from_numpy(on_top / n_top)
    span = top - bottom
    d = (desc - top) / span  # (n,) descending, in [-1, 0]
    count = np.arange(1, n + 1)
    mu = np.cumsum(d) / count
    var = np.maximum(np.cumsum(d * d) / count - mu * mu, 0.0)
    gap = mu[:-1] - d[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        psi = (gap * gap + var[:-1]) / (count[:-1] / n * gap * gap)
    active = 1 + int(np.count_nonzero(np.nan_to_num(psi, nan=math.inf) > kappa))
    head = d[:active]  # two-pass moments of the active elements, as in _solvers.chi2_weights
    mu_k = head.mean()
    var_k = ((head - mu_k) ** 2).mean()
    denominator = (2.0 * radius * active - (n - active)) / n
    eta = mu_k - math.sqrt(var_k / max(denominator, 1e-300))
    unnormalised = np.maximum((x - top) / span - eta, 0.0)
    return torch.from_numpy(unnormalised / unnormalised.sum())


# (losses, radius) -> float64 weights, keyed by divergence; drostudy._solvers re-exports this table.
UNIFORM_CPU_SOLVERS = {"chi2": chi2_uniform_cpu_weights, "cvar": cvar_uniform_cpu_weights}
