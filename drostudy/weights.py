"""Exact worst-case weights over a divergence ball: the mathematical core of every robust loss.

Given per-example losses l (n,), the worst case over the ball of radius rho around the nominal
distribution u (uniform 1/n unless a `prior` is given) is

    w* = argmax_{q in simplex, D(q || u) <= rho}  sum_i q_i l_i,      robust value = sum_i w*_i l_i.

Names and the paper's symbols:
    losses      l        per-example (or per-prompt) losses, shape (n,)
    divergence  D        "tv": 0.5 sum |q - u|, rho in [0, 1]; "kl": sum q log(q/u), rho >= 0;
                         "chi2": sum u f(q/u) with f(t) = 0.5 (t - 1)^2, rho >= 0;
                         "cvar": q_i <= u_i / alpha (the mean of the worst alpha-fraction)
    radius      rho      ball size; for "cvar" it is alpha in (0, 1] (alpha = 1 is the mean)
    reg         lambda   temperature of the penalised (Lagrangian) forms: max_q sum q l - lambda D(q || u)
    prior       u        nominal distribution (n,), positive, summing to 1 (default uniform)
    groups      g        integer group ids (n,) for the group-level (group-DRO) variant
    outlier_fraction eps DORO: the nominal mass treated as outliers and removed from the top before the
                         worst case is taken, in [0, 1) (0: plain DRO); see `doro_weights`

Guarantees: the weights are exact (feasible and optimal to float64 rounding), ties share mass in proportion
to the prior (equally for the uniform one, so the result is permutation-equivariant), a ball that reaches a
vertex puts all mass on the argmax set, radius 0 (CVaR alpha 1) returns the nominal weights bitwise, and the
output is detached (Danskin: the robust gradient is sum_i w*_i grad l_i) with the input's device and dtype.

Precision: the solvers work in float64 and cast the weights back. The KL and chi2 multipliers are roots of
1-D dual equations built from moments of the losses; in float32 they, and so feasibility, would only be good
to ~1e-7 relative, while the cast costs little next to the O(n log n) sort. float32 weights therefore sum to
1 within float32 rounding. kl and chi2 accept radius = inf (the vertex).

Speed: the solve runs at SOLVER_THREADS torch threads (see there); no solver library is used.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from drostudy import _solvers
from drostudy.threads import torch_threads

DIVERGENCES = tuple(sorted(_solvers.SOLVERS))
PENALTIES = tuple(sorted(_solvers.PENALISED_SOLVERS))
# torch intra-op threads while a solve runs on CPU (None: keep the caller's setting). The vectors are small
# (n <= ~1e5), so threads cannot pay off, and on a shared machine one parallel `exp` waiting for a busy
# core took 8-28 ms instead of ~10 us (benchmarks/bench_weights.py); switching costs ~0.2 us.
SOLVER_THREADS: int | None = 1


# what a ball is centred over: each example (a pair or a prompt) or each group (a domain) of the batch
LEVELS = ("example", "group")


def ball_is_point(divergence: str, radius: float) -> bool:
    """Whether the ball is a single point (radius 0; for cvar, alpha 1): the robust loss is the ordinary one."""
    return radius == (1.0 if divergence == "cvar" else 0.0)


def validate_radius(divergence: str, radius: float) -> float:
    """Check `radius` for `divergence` (raise ValueError naming the allowed range); return it as a float."""
    if divergence not in _solvers.SOLVERS:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {list(DIVERGENCES)}")
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or math.isnan(radius):
        raise ValueError(f"radius must be a real number; got {radius!r}")
    radius = float(radius)
    if divergence == "cvar":
        if not 0.0 < radius <= 1.0:
            raise ValueError(f"radius (cvar alpha) must be in (0, 1]; got {radius!r}")
    elif divergence == "tv":
        if not 0.0 <= radius <= 1.0:
            raise ValueError(f"radius must be in [0, 1] for divergence 'tv'; got {radius!r}")
    elif radius < 0.0:
        raise ValueError(f"radius must be >= 0 for divergence {divergence!r}; got {radius!r}")
    return radius


def worst_case_weights(
    losses: Tensor,
    divergence: str,
    radius: float,
    prior: Tensor | None = None,
    outlier_fraction: float = 0.0,
) -> Tensor:
    """Exact worst-case distribution w* (n,) for `losses` (n,) over the `divergence` ball of `radius`.

    Detached; same device and dtype as `losses`. `prior` (n,) replaces the uniform nominal distribution.
    `outlier_fraction` eps in [0, 1) > 0 gives DORO's weights (see `doro_weights`); 0 is plain DRO, bitwise.
    """
    radius = validate_radius(divergence, radius)
    if validate_outlier_fraction(outlier_fraction) > 0.0:
        return doro_weights(losses, divergence, radius, outlier_fraction, prior)
    fast = prior is None and divergence in _solvers.UNIFORM_CPU_SOLVERS
    fast = fast and isinstance(losses, Tensor) and losses.device.type == "cpu"
    _check_losses(losses, finite=not fast)  # the fast path finds NaN/inf from its sorted ends
    if prior is not None:
        _check_prior(prior, losses)
    if ball_is_point(divergence, radius):
        if fast:
            _check_finite(losses)
        return _nominal(losses, prior)
    if fast:
        return _solvers.UNIFORM_CPU_SOLVERS[divergence](losses, radius).to(dtype=losses.dtype)
    with torch_threads(SOLVER_THREADS):
        work, prior64 = _work(losses, prior)
        q = _solvers.SOLVERS[divergence](work, prior64, radius)
    return q.to(device=losses.device, dtype=losses.dtype)


def robust_value(
    losses: Tensor,
    divergence: str,
    radius: float,
    prior: Tensor | None = None,
    outlier_fraction: float = 0.0,
) -> Tensor:
    """sum_i w*_i l_i (scalar); gradients flow through `losses` only (Danskin), not through the weights."""
    return (worst_case_weights(losses, divergence, radius, prior, outlier_fraction) * losses).sum()


def doro_weights(
    losses: Tensor,
    divergence: str,
    radius: float,
    outlier_fraction: float,
    prior: Tensor | None = None,
) -> Tensor:
    """DORO's worst-case weights (n,): the ball around the nominal with its worst eps of mass removed.

    DORO (Zhai, Dan, Kolter, Ravikumar, ICML 2021) treats up to a fraction eps = `outlier_fraction` of the
    nominal p as outliers: p = (1 - eps) p' + eps p~ for a clean p' and any p~. Its risk is

        R = min_{p' : (1 - eps) p' <= p, sum p' = 1}  max_{q : D(q || p') <= rho, supp q in supp p'}  q . l.

    The minimum is attained at p'_eps = p with eps of its mass removed from the largest losses (the
    boundary level fractionally, ties sharing in proportion to p), renormalised: every feasible p' has
    P'(l <= x) <= min(1, P(l <= x) / (1 - eps)) = P'_eps(l <= x), so the law of l under p' dominates the
    one under p'_eps, and the inner maximum is monotone in that order (it is a function of the law of l,
    and a coupling moves each unit of q's mass to a loss no larger). Hence w* = the exact worst case over
    the ball around p'_eps (the existing prior-aware solver on its support), zero on the removed top.

    For kl, chi2 and cvar the support condition is implied (finite divergence, cap q <= p' / alpha); for tv
    it is imposed, since a TV ball around p' could otherwise move its mass back onto the removed outliers.
    radius 0 (cvar: 1) gives the trimmed mean; eps = 0 is `worst_case_weights`, bitwise. The paper's code
    (CVaR and chi2 DORO) drops int(eps n) whole examples: the same as here when eps n is an integer.
    """
    radius = validate_radius(divergence, radius)
    fraction = validate_outlier_fraction(outlier_fraction)
    if fraction == 0.0:
        return worst_case_weights(losses, divergence, radius, prior)
    _check_losses(losses)
    if prior is not None:
        _check_prior(prior, losses)
    with torch_threads(SOLVER_THREADS):
        work, prior64 = _work(losses, prior)
        # unit masses for the uniform prior: its level masses are then exact integer counts
        clean = _solvers.trim_top(work, torch.ones_like(work) if prior is None else prior64, fraction)
        if ball_is_point(divergence, radius):
            q = clean
        else:
            keep = clean > 0  # (n,) the support of p'_eps
            q = torch.zeros_like(work)
            q[keep] = _solvers.SOLVERS[divergence](work[keep], clean[keep], radius)
    return q.to(device=losses.device, dtype=losses.dtype)


def validate_outlier_fraction(outlier_fraction: float) -> float:
    """Check DORO's `outlier_fraction` (raise ValueError naming the range [0, 1)); return it as a float."""
    value = outlier_fraction
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"outlier_fraction must be a real number in [0, 1); got {value!r}")
    return float(value)


def penalised_weights(
    losses: Tensor, divergence: str, reg: float, prior: Tensor | None = None
) -> Tensor:
    """argmax_q sum q l - reg * D(q || prior) (n,), detached, for divergence "kl" or "chi2".

    "kl": softmax(l / reg) (prior-weighted); "chi2": prior * ((l - eta) / reg)_+ with eta exact. reg = inf
    returns the nominal weights exactly (the penalty switched off means no reweighting).
    """
    reg = _check_reg(divergence, reg)
    _check_losses(losses)
    if prior is not None:
        _check_prior(prior, losses)
    if math.isinf(reg):
        return _nominal(losses, prior)
    with torch_threads(SOLVER_THREADS):
        work, prior64 = _work(losses, prior)
        q = _solvers.PENALISED_SOLVERS[divergence](work, prior64, reg)
    return q.to(device=losses.device, dtype=losses.dtype)


def penalised_value(losses: Tensor, divergence: str, reg: float, prior: Tensor | None = None) -> Tensor:
    """max_q sum q l - reg * D(q || prior) (scalar), differentiable in `losses`.

    "kl": reg * log E_prior exp(l / reg), computed by logsumexp so l / reg ~ 1e6 does not overflow.
    "chi2": sum w l - reg * D_chi2(w) at the exact maximiser w (its gradient is sum w grad l by Danskin).
    """
    weights = penalised_weights(losses, divergence, reg, prior)
    if math.isinf(reg):
        return (weights * losses).sum()
    nominal = _work(losses, prior)[1]  # (n,) float64
    if divergence == "kl":
        log_nominal = torch.log(nominal).to(device=losses.device, dtype=losses.dtype)
        top = losses.detach().max()  # shifted so that l / reg cannot overflow
        return top + reg * torch.logsumexp((losses - top) / reg + log_nominal, 0)
    penalty = _solvers.chi2_divergence(weights.to(nominal), nominal)
    return (weights * losses).sum() - reg * penalty.to(device=losses.device, dtype=losses.dtype)


def group_worst_case_weights(losses: Tensor, groups: Tensor, divergence: str, radius: float) -> Tensor:
    """Per-example weights (n,) for the worst case over the distribution of groups (group DRO).

    The ball is around the empirical group proportions p_g = n_g / n (not the uniform distribution over
    groups): then radius 0 gives each example 1/n, i.e. the ordinary mean loss, and the nominal model of
    the data is the one the minibatch actually shows. The worst case maximises sum_g q_g * mean_{i in g} l_i
    and each example of group g gets q_g / n_g.
    """
    radius = validate_radius(divergence, radius)
    _check_losses(losses)
    if not isinstance(groups, Tensor) or groups.shape != losses.shape or groups.is_floating_point():
        got = tuple(groups.shape) if isinstance(groups, Tensor) else type(groups).__name__
        raise ValueError(f"groups must be an integer tensor of shape {tuple(losses.shape)}; got {got}")
    if ball_is_point(divergence, radius):
        return _nominal(losses, None)
    with torch_threads(SOLVER_THREADS):
        work, _ = _work(losses, None)
        ids, member = torch.unique(groups.to(work.device), return_inverse=True)
        counts = torch.zeros(len(ids), dtype=torch.float64, device=work.device)
        counts.index_add_(0, member, torch.ones_like(work))  # (G,) examples per group
        group_means = torch.zeros_like(counts).index_add_(0, member, work) / counts  # (G,)
        q_groups = _solvers.SOLVERS[divergence](group_means, counts / len(work), radius)  # (G,)
    return (q_groups / counts)[member].to(device=losses.device, dtype=losses.dtype)


def _nominal(losses: Tensor, prior: Tensor | None) -> Tensor:
    """The nominal weights, bitwise: 1/n everywhere, or the prior itself."""
    if prior is None:
        return torch.full_like(losses, 1.0 / losses.numel()).detach()
    return prior.detach().to(device=losses.device, dtype=losses.dtype).clone()


def _work(losses: Tensor, prior: Tensor | None) -> tuple[Tensor, Tensor]:
    """float64 copies of losses and prior; on CPU when the device has no float64 (Apple MPS)."""
    device = torch.device("cpu") if losses.device.type == "mps" else losses.device
    work = losses.detach().to(device=device, dtype=torch.float64)
    if prior is None:
        return work, torch.full_like(work, 1.0 / work.numel())
    prior64 = prior.detach().to(device=device, dtype=torch.float64)
    return work, prior64 / prior64.sum()


def _check_losses(losses: Tensor, finite: bool = True) -> None:
    if not isinstance(losses, Tensor):
        raise ValueError(f"losses must be a torch.Tensor; got {type(losses).__name__}")
    if not losses.is_floating_point():
        raise ValueError(f"losses must be a floating-point tensor; got dtype {losses.dtype}")
    if losses.ndim != 1 or losses.numel() == 0:
        raise ValueError(
            f"losses must be 1-D and non-empty, shape (n,); got shape {tuple(losses.shape)}"
        )
    if finite:
        _check_finite(losses)


def _check_finite(losses: Tensor) -> None:
    if not bool(torch.isfinite(losses).all()):
        raise ValueError("losses must be finite; got NaN or inf")


def _check_prior(prior: Tensor, losses: Tensor) -> None:
    if not isinstance(prior, Tensor) or prior.shape != losses.shape or not prior.is_floating_point():
        got = tuple(prior.shape) if isinstance(prior, Tensor) else type(prior).__name__
        raise ValueError(f"prior must be a floating tensor of shape {tuple(losses.shape)}; got {got}")
    total = prior.detach().double().sum().item()
    if not (bool(torch.isfinite(prior).all()) and bool((prior > 0).all()) and abs(total - 1.0) < 1e-6):
        raise ValueError(f"prior must be positive, finite and sum to 1; got sum {total!r}")


def _check_reg(divergence: str, reg: float) -> float:
    if divergence not in _solvers.PENALISED_SOLVERS:
        raise ValueError(
            f"unknown penalised divergence {divergence!r}; expected one of {list(PENALTIES)}"
        )
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not reg > 0:
        raise ValueError(f"reg must be a real number > 0 (inf switches the penalty off); got {reg!r}")
    return float(reg)
