"""One paired comparison of a setting with its baseline over seeds: interval, t-test, MDE; Holm; verdict.

Design. A setting and its baseline (ordinary training) run with the same seeds, and a seed fixes the
training subset, the initialisation, the batch order and the test pairs: the per-seed differences
d_s = metric(setting, s) - metric(baseline, s) are paired, and the seed-to-seed spread they share cancels.
For n seeds with mean dbar and sample sd s_d (ddof 1):

    95% interval   dbar -+ t_{0.975, n-1} s_d / sqrt(n)         (unadjusted: see the verdicts)
    p-value        two-sided paired t-test of E[d] = 0
    verdict        Holm's step-down correction over a family of comparisons at family-wise alpha 0.05:
                   "better" / "worse" when the Holm-adjusted p-value is < alpha (the sign of dbar, read
                   through the metric's direction), else "not resolved"
    mde            the smallest true mean difference the paired t-test detects with 80% power at two-sided
                   alpha 0.05 with n seeds and sd s_d, from the noncentral t (exact, not the usual
                   (t_{1-a/2} + t_{power}) s_d / sqrt(n) approximation): "not resolved" then reads "no
                   difference larger than mde"

The interval is the unadjusted 95% one on purpose: it says how precisely each difference is measured (the
resolution targets of the notebooks, e.g. half-width <= 0.015, are about that), while Holm decides the
verdicts. Holm-adjusted p-values are never below the raw ones, so a "better"/"worse" verdict always has an
interval that excludes 0; the converse fails only when the family correction bites, and then the verdict
is "not resolved" although the interval excludes 0. Holm has no interval that matches its step-down
decisions exactly (Bonferroni intervals at 1 - alpha/m would be simultaneous but disagree with them).

Identical differences (sd 0, e.g. two settings that predict every test pair alike on every seed) make
the t-test degenerate: the interval has width 0, mde is 0 and the verdict follows the sign of dbar (not
resolved when it is 0). Read such a row as "identical on these seeds", not as infinite precision.

Missing seeds: a seed present for only one of the two settings (a crashed or unfinished run) is dropped
with a warning, and `n_seeds` reports the pairs actually used; fewer than 2 pairs raise ValueError.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats


class Comparison(NamedTuple):
    """A paired comparison of a setting to its baseline over the seeds they share."""

    n_seeds: int  # pairs used
    mean_diff: float  # mean of setting - baseline
    ci_low: float  # unadjusted `confidence` t-interval on the mean difference
    ci_high: float
    sd_diff: float  # sample sd (ddof 1) of the per-seed differences
    p_value: float  # two-sided paired t-test, unadjusted
    mde: float  # minimum detectable |mean difference| at `power`, two-sided `alpha`


def paired_differences(setting: pd.Series, baseline: pd.Series) -> pd.Series:
    """Per-seed differences setting - baseline over the shared seeds (both Series indexed by seed).

    Unpaired seeds are dropped with a warning; fewer than 2 shared seeds raise ValueError.
    """
    for name, values in (("setting", setting), ("baseline", baseline)):
        if not isinstance(values, pd.Series) or values.index.has_duplicates:
            raise ValueError(f"{name} must be a pandas Series indexed by unique seeds")
        if not np.isfinite(values.to_numpy(dtype=float)).all():
            raise ValueError(f"{name} must hold finite values; got {values.to_dict()}")
    shared = setting.index.intersection(baseline.index).sort_values()
    unpaired = setting.index.symmetric_difference(baseline.index)
    if len(unpaired):
        warnings.warn(
            f"dropping unpaired seeds {sorted(unpaired.tolist())}: a comparison uses only the seeds "
            "that both the setting and the baseline have",
            stacklevel=2,
        )
    if len(shared) < 2:
        raise ValueError(
            f"setting and baseline must share at least 2 seeds; got {len(shared)} ({shared.tolist()})"
        )
    return (setting.loc[shared].astype(float) - baseline.loc[shared].astype(float)).rename("diff")


def paired_comparison(
    setting: pd.Series,
    baseline: pd.Series,
    confidence: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
) -> Comparison:
    """Mean difference, t-interval, paired t-test and MDE of `setting` vs `baseline` (Series by seed)."""
    _check_probability(confidence, "confidence")
    diff = paired_differences(setting, baseline).to_numpy()
    n = len(diff)
    mean, sd = float(diff.mean()), float(diff.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0.0:  # all differences equal: certain up to the data (t would be 0/0 or +-inf)
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        p_value = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    mde = minimum_detectable_effect(sd, n, alpha, power)
    return Comparison(n, mean, mean - half, mean + half, sd, p_value, mde)


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |mean difference| a two-sided paired t-test at `alpha` detects with `power` (n pairs).

    Exact: solves P(|T| > t_{1-alpha/2, n-1}) = power for T ~ noncentral t(n-1, delta sqrt(n) / sd).
    """
    _check_probability(alpha, "alpha")
    _check_probability(power, "power")
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise ValueError(f"n must be an integer >= 2 (seeds); got {n!r}")
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be finite and >= 0; got {sd!r}")
    if sd == 0.0:
        return 0.0
    df, critical = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(effect: float) -> float:  # effect in units of sd
        nc = effect * math.sqrt(n)
        # P(T < -c) as P(-T > c): scipy's nct.cdf returns NaN far in the left tail (df 1, nc ~ 28)
        return stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc) - power

    # The approximation (t_{1-a/2} + t_power) / sqrt(n) is close; bracket generously around it.
    guess = (critical + stats.t.ppf(power, df)) / math.sqrt(n)
    upper = 2.0 * guess
    while shortfall(upper) < 0:
        upper *= 2.0
    return float(optimize.brentq(shortfall, 0.0, upper, xtol=1e-14, rtol=1e-14)) * sd


def paired_sd(half_width: float, n_seeds: int) -> float:
    """The sd over seeds of a paired difference whose 95% t-interval over `n_seeds` has `half_width`."""
    return half_width * math.sqrt(n_seeds) / float(stats.t.ppf(0.975, n_seeds - 1))


def seeds_needed(sd_diff: float, target: float, most: int = 1000) -> int:
    """The fewest paired seeds n (2 to `most`) whose 95% t half-width t_{n-1} sd / sqrt(n) is at most
    `target`; `most` when none is."""
    for n in range(2, most + 1):
        if stats.t.ppf(0.975, n - 1) * sd_diff / math.sqrt(n) <= target:
            return n
    return most


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): p~_(j) = max_{i <= j} min(1, (m - i + 1) p_(i)). Reject
    H_(j) at family-wise level alpha iff p~_(j) < alpha.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1) | np.isnan(p)).any():
        raise ValueError(f"p_values must be a 1-D sequence of numbers in [0, 1]; got {p_values!r}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(stepped)
    return adjusted


def verdict(mean_diff: float, p_adjusted: float, alpha: float = 0.05, higher_is_better: bool = True):
    """A verdict in VERDICTS: better or worse (by the sign of the gain) if p_adjusted < alpha, else not
    resolved."""
    if not p_adjusted < alpha or mean_diff == 0:
        return "not resolved"
    return "better" if (mean_diff > 0) == higher_is_better else "worse"


def _check_probability(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
