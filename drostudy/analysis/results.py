"""Run metrics -> one tidy table -> means and 95% intervals over seeds -> a conclusion written from the numbers.

The tidy table (one row per run, domain and metric) is read by drostudy.analysis.tidy; its names
(`collect`, `tidy`, `results_dir`, `COLUMNS`, ...) are re-exported here, so a notebook imports the whole
path from one module. Here: the t-interval and its formatting (`t_interval`, `mean_pm`), summaries over
seeds per setting (`summary`, `id_ood`, `setting_means`), the labels and colours of the settings, and the
comparison of the best robust setting with ordinary training, with its sentences (`compare_to_ordinary`,
`conclusion_text`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from drostudy.analysis.tidy import (  # noqa: F401 (re-exported: see above)
    COLUMNS,
    ORDINARY,
    RUN_KEYS,
    SETTING_KEYS,
    collect,
    find_inputs,
    results_dir,
    scalar_rows,
    stage_per_sweep,
    tidy,
)


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student-t interval of the mean; the half-width is NaN for fewer than 2."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / math.sqrt(n))


def mean_pm(mean, half=None, spec: str = ".3f") -> str:
    """`mean ± half` (the mean in `spec`, the half-width in .3f); just the mean when there is no interval
    (half None or NaN: fewer than two seeds), "n/a" when there is no mean. The one formatter of the notebooks."""
    if mean is None:
        return "n/a"
    text = format(mean, spec)
    return text if half is None or math.isnan(half) else f"{text} ± {half:.3f}"


def intervals_overlap(diff: float, half_a, half_b) -> bool | None:
    """Whether two 95% intervals whose means differ by `diff` overlap (|diff| <= half_a + half_b): a
    conservative test of a difference; None when either has no interval (None or NaN half-width)."""
    if any(h is None or math.isnan(h) for h in (half_a, half_b)):
        return None
    return bool(abs(diff) <= half_a + half_b)


def summary(df: pd.DataFrame, by=(*SETTING_KEYS, "domain")) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of each metric, per `by` (default stage/method/divergence/radius/domain).

    Columns: *by, metric, mean, n, ci95 (half-width), ci_low, ci_high.
    """
    keys = [*by, "metric"]
    rows = []
    for key, values in df.dropna(subset=["value"]).groupby(keys, dropna=False, sort=True)["value"]:
        mean, half = t_interval(values.to_numpy())
        rows.append({**dict(zip(keys, key, strict=True)), "mean": mean, "n": len(values), "ci95": half})
    out = pd.DataFrame(rows, columns=[*keys, "mean", "n", "ci95"])
    out["ci_low"], out["ci_high"] = out["mean"] - out["ci95"], out["mean"] + out["ci95"]
    return out[[*keys, "mean", "n", "ci95", "ci_low", "ci_high"]]


def select_metric(df: pd.DataFrame, metric: str | dict[str, str]) -> pd.DataFrame:
    """The rows of `metric`; a dict gives each stage its own (e.g. {"rm": "accuracy", "rl": "correct"}),
    and stages missing from it are left out."""
    if isinstance(metric, str):
        return df[df["metric"] == metric]
    return df[df["metric"] == df["stage"].map(metric)]


def id_ood(df: pd.DataFrame, metric: str | dict[str, str] = "accuracy") -> pd.DataFrame:
    """One row per run: `id` = mean of `metric` over its training domains, `ood` = over the others.

    `metric`: one name, or one per stage (see `select_metric`)."""
    data = select_metric(df, metric)
    data = data[data["value"].notna()]
    keys = ["run", *SETTING_KEYS, "seed"]
    if data.empty:
        return pd.DataFrame(columns=[*keys, "id", "ood"])
    means = (
        data.groupby([*keys, "in_distribution"], dropna=False)["value"].mean().unstack("in_distribution")
    )
    means = means.rename(columns={True: "id", False: "ood"}).reindex(columns=["id", "ood"])
    return means.reset_index().rename_axis(columns=None)


def label(df: pd.DataFrame) -> pd.Series:
    """A readable name per row: `ordinary`, or `method/divergence` for the robust variants."""
    div = df["divergence"].fillna("").astype(str)
    robust = (df["method"] != ORDINARY) & (div != "")
    return df["method"].astype(str).where(~robust, df["method"].astype(str) + "/" + div)


def label_colors(labels) -> dict[str, str]:
    """Colour per `label` value: ordinary in its fixed black, `method/divergence` in the divergence's colour
    (drostudy.plotting.METHOD_COLORS); anything else, or colliding names, from the Okabe-Ito cycle."""
    from drostudy.plotting import METHOD_COLORS, color_map

    distinct = list(dict.fromkeys(map(str, labels)))
    keys = [v.split("/")[-1] for v in distinct]
    if all(k in METHOD_COLORS for k in keys) and len(set(keys)) == len(keys):
        return {v: METHOD_COLORS[k] for v, k in zip(distinct, keys, strict=True)}
    return color_map(distinct)


def compare_to_ordinary(df: pd.DataFrame, metric: str | dict[str, str] = "accuracy") -> list[dict]:
    """Per stage: the setting with the best mean OOD `metric` against ordinary training (means over seeds).

    Ordinary training is method == "ordinary" (or, when no run is named so, radius 0). Each record holds
    both settings' ID/OOD means and 95% half-widths, the differences, and whether the OOD intervals overlap
    (None when either has fewer than two seeds).
    """
    runs = id_ood(df, metric)
    records = []
    for stage, part in runs.groupby("stage", dropna=False, sort=True):
        settings = setting_means(part)
        base = settings[settings["method"] == ORDINARY]
        base = base if len(base) else settings[settings["radius"].fillna(-1) == 0]
        robust = settings.drop(base.index)
        if base.empty or robust.empty:
            continue
        best, ref = robust.loc[robust["ood"].idxmax()], base.loc[base["ood"].idxmax()]
        records.append(
            _comparison(stage, metric if isinstance(metric, str) else metric[stage], best, ref)
        )
    return records


def setting_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting (stage/method/divergence/radius) of an `id_ood` table: ID and OOD means over seeds,
    their 95% half-widths (NaN below two seeds) and the seed count."""
    rows = []
    for key, g in runs.groupby(list(SETTING_KEYS), dropna=False, sort=True):
        row = dict(zip(SETTING_KEYS, key, strict=True))
        row["id"], row["id_ci95"] = t_interval(g["id"].dropna())
        row["ood"], row["ood_ci95"] = t_interval(g["ood"].dropna())
        rows.append({**row, "seeds": int(g["ood"].notna().sum())})
    return pd.DataFrame(rows).dropna(subset=["ood"]).reset_index(drop=True)


def _comparison(stage, metric: str, best: pd.Series, ref: pd.Series) -> dict:
    overlap = intervals_overlap(best["ood"] - ref["ood"], best["ood_ci95"], ref["ood_ci95"])
    keep = [*SETTING_KEYS[1:], "id", "id_ci95", "ood", "ood_ci95", "seeds"]
    return {
        "stage": stage,
        "metric": metric,
        "best": {k: _plain(best[k]) for k in keep},
        "ordinary": {k: _plain(ref[k]) for k in keep},
        "ood_gain": _plain(float(best["ood"] - ref["ood"])),
        "id_cost": _plain(float(ref["id"] - best["id"])),
        "ood_intervals_overlap": overlap,
    }


def _plain(value):
    """numpy scalars / NaN -> JSON-friendly Python values."""
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


_OVERLAP_TEXT = {
    None: "fewer than two seeds on a side, so no interval comparison",
    True: "the 95% intervals overlap: these seeds do not resolve the difference",
    False: "the 95% intervals do not overlap",
}


def conclusion_text(records: list[dict]) -> str:
    """Sentences stating what `compare_to_ordinary` found, one paragraph per stage."""
    if not records:
        return "No stage has both an ordinary and a robust run with OOD results: nothing to compare."
    lines = []
    for r in records:
        b, o = r["best"], r["ordinary"]
        name = (
            b["method"]
            if b["divergence"] is None
            else f"{b['method']} ({b['divergence']}, radius {b['radius']})"
        )
        ci = _OVERLAP_TEXT[r["ood_intervals_overlap"]]
        verdict = (
            ""
            if (r["ood_gain"] or 0.0) > 0
            else "no robust setting beats ordinary out of distribution; "
        )
        lines.append(
            f"[{r['stage']}] {verdict}best OOD {r['metric']}: {name} with {mean_pm(b['ood'])} over {b['seeds']} seed(s) "
            f"vs ordinary {mean_pm(o['ood'])} ({mean_pm(r['ood_gain'], spec='+.3f')}); in-distribution cost "
            f"{mean_pm(r['id_cost'], spec='+.3f')} ({mean_pm(b['id'])} vs {mean_pm(o['id'])}); {ci}."
        )
    return "\n".join(lines)
