"""Paired comparisons of robust settings against a baseline over seeds, with Holm's correction and power.

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
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import optimize, stats

from drostudy.io import atomic_write_text

SPLITS = ("id", "ood")
COLUMNS = (
    "stage",
    "setting",
    "baseline",
    "split",
    "domain",
    "metric",
    "n_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "mde",
    "verdict",
)
RESULT_COLUMNS = ("stage", "setting", "seed", "split", "domain", "metric", "value")
ENDPOINT = ("stage", "split", "domain", "metric")  # one measured quantity; settings are compared on it
VERDICTS = ("better", "worse", "not resolved")
# An interval whose end lies this close to 0 gives a verdict that a rerun on other hardware may flip
# (float reductions differ across CPUs and thread counts): such a verdict is reported as fragile.
FRAGILE = 0.003


def is_fragile(ci_low: float, ci_high: float, margin: float = FRAGILE) -> bool:
    """Whether an end of the interval [ci_low, ci_high] lies within `margin` of 0."""
    return min(abs(ci_low), abs(ci_high)) <= margin


def fragility_note(ci_low: float, ci_high: float) -> str:
    """ " (fragile: ...)" for a conclusion sentence when `is_fragile`, else ""."""
    if not is_fragile(ci_low, ci_high):
        return ""
    return f" (fragile: an end of the interval lies within {FRAGILE} of 0; a rerun may move the verdict)"


_FILE_NAME = re.compile(r"\d\d_[A-Za-z0-9_-]+\.comparisons\.csv")


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


def half_width(comparisons: pd.DataFrame | Comparison) -> pd.Series | float:
    """Half-width (ci_high - ci_low) / 2 of each interval: a Series for a table, a float for one row."""
    return (comparisons.ci_high - comparisons.ci_low) / 2


def paired_comparisons(
    results: pd.DataFrame,
    baseline: str = "ordinary",
    lower_is_better: Iterable[str] = (),
    alpha: float = 0.05,
    power: float = 0.8,
    family: Sequence[str] = ENDPOINT,
) -> pd.DataFrame:
    """Every setting against `baseline` on every (stage, split, domain, metric): COLUMNS plus sd_diff,
    p_value, p_holm.

    results: long DataFrame with RESULT_COLUMNS, one row per run and quantity (split "id" or "ood";
    domain a domain name or "mean"). Each stage's `baseline` rows are the reference for its other settings.
    lower_is_better: metric names where a decrease is the gain (e.g. losses); others are accuracies.
    family: the columns that define one family for Holm's correction. The default corrects across the
    settings compared on one endpoint; () corrects across the whole table (the strictest reading of "the
    settings compared in one notebook", at a power cost that grows with the number of domains).
    """
    results = _check_results(results, baseline, family)
    lower = set(lower_is_better)
    rows = []
    for (stage, split, domain, metric), block in results.groupby(list(ENDPOINT), sort=True):
        by_setting = {s: g.set_index("seed")["value"] for s, g in block.groupby("setting", sort=True)}
        if baseline not in by_setting:
            raise ValueError(f"baseline {baseline!r} has no runs for {stage}/{split}/{domain}/{metric}")
        for setting, values in by_setting.items():
            if setting == baseline:
                continue
            try:
                comparison = paired_comparison(values, by_setting[baseline], 0.95, alpha, power)
            except ValueError as error:
                where = f"{stage}/{split}/{domain}/{metric}, setting {setting!r}"
                raise ValueError(f"results for {where}: {error}") from error
            key = dict(stage=stage, setting=setting, baseline=baseline, split=split)
            rows.append(key | dict(domain=domain, metric=metric) | comparison._asdict())
    table = pd.DataFrame(rows, columns=[*COLUMNS[:6], *Comparison._fields])
    if table.empty:
        raise ValueError(f"results must hold at least one setting besides the baseline {baseline!r}")
    groups = table.groupby(list(family), sort=False) if family else [(None, table)]
    table["p_holm"] = pd.concat([pd.Series(holm(g.p_value), index=g.index) for _, g in groups])
    table["verdict"] = [
        verdict(row.mean_diff, row.p_holm, alpha, row.metric not in lower) for row in table.itertuples()
    ]
    return table[[*COLUMNS, "sd_diff", "p_value", "p_holm"]]


def comparisons_table(results: pd.DataFrame, baseline: str = "ordinary", **kwargs) -> pd.DataFrame:
    """The tidy table of `paired_comparisons` with exactly COLUMNS (what notebooks write and 05 reads)."""
    return paired_comparisons(results, baseline, **kwargs)[list(COLUMNS)].reset_index(drop=True)


def write_comparisons(table: pd.DataFrame, path: str | Path) -> Path:
    """Write `table` (exactly COLUMNS) to `path`, named `NN_<notebook>.comparisons.csv`, atomically."""
    path = Path(path)
    if not _FILE_NAME.fullmatch(path.name):
        raise ValueError(f"path must be named NN_<notebook>.comparisons.csv; got {path.name!r}")
    if tuple(table.columns) != COLUMNS:
        raise ValueError(
            f"table must have exactly the columns {list(COLUMNS)}; got {list(table.columns)}"
        )
    if not set(table.verdict) <= set(VERDICTS):
        raise ValueError(f"table verdicts must be in {list(VERDICTS)}; got {sorted(set(table.verdict))}")
    atomic_write_text(path, table.to_csv(index=False))
    return path


def add_domain_mean(results: pd.DataFrame) -> pd.DataFrame:
    """`results` plus domain "mean" rows: the unweighted mean over domains of each run's split and metric.

    Runs that already have a "mean" row keep it (it may be pooled over pairs rather than over domains).
    """
    results = _check_results(results, None, ())
    keys = ["stage", "setting", "seed", "split", "metric"]
    has_mean = results.domain == "mean"
    means = results[~has_mean].groupby(keys, as_index=False)["value"].mean().assign(domain="mean")
    present = results[has_mean].set_index(keys).index
    means = means[~means.set_index(keys).index.isin(present)]
    return pd.concat([results, means[list(RESULT_COLUMNS)]], ignore_index=True)


def _check_results(results: pd.DataFrame, baseline: str | None, family: Sequence[str]) -> pd.DataFrame:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame; got {type(results).__name__}")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results must have the columns {list(RESULT_COLUMNS)}; missing {missing}")
    unknown = sorted(set(results["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"results column split must be one of {list(SPLITS)}; got {unknown}")
    bad_family = [c for c in family if c not in ENDPOINT]
    if bad_family:
        raise ValueError(f"family must be a subset of {list(ENDPOINT)}; got {bad_family}")
    duplicated = results.duplicated(["stage", "setting", "seed", "split", "domain", "metric"])
    if duplicated.any():
        raise ValueError(
            f"results must have one row per run and quantity; duplicated:\n{results[duplicated]}"
        )
    if baseline is not None and baseline not in set(results["setting"]):
        raise ValueError(
            f"baseline {baseline!r} is not among the settings {sorted(set(results.setting))}"
        )
    return results[list(RESULT_COLUMNS)]


def _check_probability(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}")
