"""Robustness curves for any reward model: accuracy under the worst-case reweighting of its test pairs inside
a ball around the training mix, against the radius, and how well the curve bounds a measured shift.

Inputs are only per-pair test margins r(x, y_w) - r(x, y_l) (or 0/1 correctness), each pair's domain and the
training mix over domains, so a reward model trained elsewhere (e.g. plain TRL's RewardTrainer) is scored the
same way: compute its margins on drostudy's test pairs (drostudy.reward.data.test_pairs, reward_margins) and
call `robustness_curve(margins, domains, {"math": 1, "code": 1, "knowledge": 1}, "tv", radii)`.

The nominal distribution P0 puts the training mix's share of each domain on that domain's test pairs, evenly
(domains outside the mix get 0). Two balls:
- pair level: any reweighting q of the test pairs with D(q || P0) <= radius;
- domain level: any domain mix m with D(m || mix) <= radius, pairs evenly weighted within a domain.
The worst-case accuracy is 1 - max_q E_q[error]. Radius 0 gives the nominal (training-mix) accuracy.

TV is computed in closed form on every pair (mass moves to pairs and domains the mix never saw: the point
of the curve). A KL or chi2 ball cannot put mass where P0 has none, so for them only the training domains'
pairs are reweighted (drostudy.weights.worst_case_weights on P0's support): their curves say how
accuracy bends inside the training domains, not how it reaches held-out ones.

Bound check. The mixture (1 - t) * mix + t * held-out domain h is at TV distance t from the mix, so the
domain-level (and, below it, the pair-level) worst case at radius t is a lower bound on its accuracy,
(1 - t) * nominal + t * accuracy(h); `bound_check` reports bound against measured for each h and t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from drostudy.weights import worst_case_weights

CURVE_LEVELS = ("pair", "domain")  # the curve's two balls (not a training `level`)


def tv_worst_mean(losses: np.ndarray, prior: np.ndarray, radius: float) -> float:
    """max_q sum q l over 0.5 ||q - prior||_1 <= radius on the simplex (prior may have zeros): exact.

    The LP's solution moves mass `radius` from the lowest-loss points (in prior mass) to the largest loss.
    """
    order = np.argsort(losses, kind="stable")
    taken = np.clip(radius - (np.cumsum(prior[order]) - prior[order]), 0.0, prior[order])
    return float(prior @ losses - taken @ losses[order] + taken.sum() * losses.max())


def _nominal(domains: np.ndarray, mix: Mapping[str, float]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(P0 over pairs, the domains present, their mix shares) from a {domain: weight} training mix."""
    names = sorted(set(domains.tolist()))
    unknown = [d for d in mix if d not in names]
    if unknown or not mix or min(mix.values()) < 0 or sum(mix.values()) <= 0:
        raise ValueError(
            f"train_mix must give non-negative weights to some of the test domains {names}; got {dict(mix)}"
        )
    share = np.array([mix.get(d, 0.0) for d in names], dtype=float)
    share /= share.sum()
    counts = {d: int((domains == d).sum()) for d in names}
    prior = np.array([share[names.index(d)] / counts[d] for d in domains.tolist()])
    return prior, names, share


def _worst_mean(losses: np.ndarray, prior: np.ndarray, divergence: str, radius: float) -> float:
    if divergence == "tv":
        return tv_worst_mean(losses, prior, radius)
    support = prior > 0  # KL/chi2 balls stay on P0's support
    p = torch.tensor(prior[support] / prior[support].sum(), dtype=torch.float64)
    loss = torch.tensor(losses[support], dtype=torch.float64)
    return float((worst_case_weights(loss, divergence, radius, prior=p) * loss).sum())


def robustness_curve(
    scores: Sequence[float],
    domains: Sequence[str],
    train_mix: Mapping[str, float],
    divergence: str = "tv",
    radii: Sequence[float] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9),
    correct: bool = False,
) -> pd.DataFrame:
    """Worst-case accuracy at each radius, pair- and domain-level: columns level, divergence, radius, accuracy.

    scores (n,): margins (a pair is right when > 0; a tie is wrong, as drostudy's accuracy) or, with
    correct=True, 0/1 correctness; domains (n,): each pair's domain; train_mix: {domain: weight}.
    """
    scores, domains = np.asarray(scores, dtype=float), np.asarray(domains, dtype=str)
    if scores.ndim != 1 or scores.shape != domains.shape or not len(scores):
        raise ValueError(
            f"scores and domains must be 1-D of one length; got {scores.shape}, {domains.shape}"
        )
    if correct and not np.isin(scores, (0.0, 1.0)).all():
        raise ValueError("scores must be 0/1 when correct=True")
    errors = 1.0 - (scores if correct else (scores > 0).astype(float))
    prior, names, share = _nominal(domains, train_mix)
    domain_errors = np.array([errors[domains == d].mean() for d in names])
    rows = []
    for radius in radii:
        pair = _worst_mean(errors, prior, divergence, radius)
        dom = _worst_mean(domain_errors, share, divergence, radius)
        for level, worst in zip(CURVE_LEVELS, (pair, dom), strict=True):
            rows.append(
                dict(level=level, divergence=divergence, radius=float(radius), accuracy=1 - worst)
            )
    return pd.DataFrame(rows)


def bound_check(
    scores: Sequence[float],
    domains: Sequence[str],
    train_mix: Mapping[str, float],
    shifts: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    correct: bool = False,
) -> pd.DataFrame:
    """For each held-out domain h and shift t: the accuracy measured on (1 - t) * mix + t * h against the TV
    worst cases at radius t (pair and domain level), which must lie below it.

    Columns: domain, shift, measured, domain_bound, pair_bound, holds, gap (measured - domain_bound).
    """
    scores, domains = np.asarray(scores, dtype=float), np.asarray(domains, dtype=str)
    right = scores if correct else (scores > 0).astype(float)
    prior, names, share = _nominal(domains, train_mix)
    nominal = float(prior @ right)
    curve = robustness_curve(scores, domains, train_mix, "tv", shifts, correct).set_index(
        ["level", "radius"]
    )
    rows = []
    for h in (d for d, s in zip(names, share, strict=True) if s == 0):
        for t in shifts:
            measured = (1 - t) * nominal + t * float(right[domains == h].mean())
            dom, pair = (
                curve.loc[("domain", float(t)), "accuracy"],
                curve.loc[("pair", float(t)), "accuracy"],
            )
            rows.append(
                dict(domain=h, shift=float(t), measured=measured, domain_bound=dom, pair_bound=pair)
                | dict(holds=bool(pair <= dom + 1e-12 and dom <= measured + 1e-12), gap=measured - dom)
            )
    return pd.DataFrame(rows)
