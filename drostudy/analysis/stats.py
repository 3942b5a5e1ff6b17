"""Tables of paired comparisons: every robust setting against its baseline over seeds, on every endpoint
(stage, split, domain, metric), with Holm's correction per family and the verdicts; the comparisons CSV
every notebook writes and 05 reads.

The statistics of one comparison (the paired t-interval, the t-test, the minimum detectable effect,
Holm's step-down correction, the verdict) and why they are read as they are: drostudy.analysis.paired.
`paired_comparison`, `holm` and `verdict` are re-exported here.

`split` names the distribution a quantity is measured on: "id" (the training domains) or "ood" (the
held-out ones), the values of DISTRIBUTIONS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from drostudy.analysis.paired import Comparison, holm, paired_comparison, verdict
from drostudy.io import atomic_write_text

# each stage's quality endpoint: preference accuracy (reward models, DPO), reference-graded correctness (RL);
# margins, KL and learned reward have other directions and scales, and stay in the CSVs
QUALITY_METRICS = ("accuracy", "correct")
DISTRIBUTIONS = ("id", "ood")  # the values of the `split` column: in or out of the training distribution
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
    results = check_results(results, baseline, family)
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
    results = check_results(results, None, ())
    keys = ["stage", "setting", "seed", "split", "metric"]
    has_mean = results.domain == "mean"
    means = results[~has_mean].groupby(keys, as_index=False)["value"].mean().assign(domain="mean")
    present = results[has_mean].set_index(keys).index
    means = means[~means.set_index(keys).index.isin(present)]
    return pd.concat([results, means[list(RESULT_COLUMNS)]], ignore_index=True)


def check_results(results: pd.DataFrame, baseline: str | None, family: Sequence[str]) -> pd.DataFrame:
    """The RESULT_COLUMNS of `results`, after checking its columns, splits, uniqueness, `baseline` (None:
    not checked) and Holm `family` (ValueError naming what is wrong)."""
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"results must be a pandas DataFrame; got {type(results).__name__}")
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results must have the columns {list(RESULT_COLUMNS)}; missing {missing}")
    unknown = sorted(set(results["split"]) - set(DISTRIBUTIONS))
    if unknown:
        raise ValueError(f"results column split must be one of {list(DISTRIBUTIONS)}; got {unknown}")
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
