"""Run metrics -> one tidy table -> means and 95% intervals over seeds -> a conclusion written from the numbers.

Inputs are the `metrics.json` of a training run (layout in `drostudy.runs`) and the notebook result
records `results/NN_slug.json` (+ `NN_slug.runs.json`, see `write_record`) = {"runs": [metrics, ...], ...}, or, from a notebook that trains nothing (01),
any nested dict of numbers (one row per number, see `scalar_rows`). The tidy table has one row per
(run, domain, metric) with the columns in `COLUMNS`; `run` identifies the run the row came from.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from drostudy.analysis.records import read_record, record_files
from drostudy.io import METRICS_FILE, notebook_paths

RUN_KEYS = ("stage", "method", "divergence", "radius", "seed", "train_domains", "eval_domains")
COLUMNS = (*RUN_KEYS, "domain", "in_distribution", "metric", "value", "run_dir", "run", "source")
# A setting is everything that identifies a run except its seed: summaries average over seeds within it.
SETTING_KEYS = ("stage", "method", "divergence", "radius")
ORDINARY = "ordinary"


def results_dir() -> Path:
    """Where notebooks record scalar results: $DROSTUDY_RESULTS or <repo>/results (created)."""
    root = os.environ.get("DROSTUDY_RESULTS")
    path = Path(root) if root else Path(__file__).resolve().parents[2] / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _field(metrics: dict, name: str):
    """A run key from the top level of `metrics`, else from its `config`."""
    if name in metrics:
        return metrics[name]
    return (metrics.get("config") or {}).get(name)


def _domains(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(x for x in value.split(",") if x) if isinstance(value, str) else tuple(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def tidy(metrics: dict, run_dir: str | None = None) -> list[dict]:
    """One row per (domain, metric) of `metrics["per_domain"]`, carrying the run's keys (see `COLUMNS`).

    `in_distribution` is True for the run's training domains. Non-numeric metric values are left out.
    """
    train = _domains(_field(metrics, "train_domains"))
    base = {k: _field(metrics, k) for k in ("stage", "method", "divergence", "radius", "seed")}
    base.update(
        train_domains=",".join(train), eval_domains=",".join(_domains(_field(metrics, "eval_domains")))
    )
    base.update(run_dir=run_dir, run=run_dir)
    rows = []
    for domain, values in sorted((metrics.get("per_domain") or {}).items()):
        for metric, value in sorted(values.items()):
            if _is_number(value):
                row = {"domain": domain, "in_distribution": domain in train, "metric": metric}
                rows.append({**base, **row, "value": float(value)})
    return rows


def _expand(paths_or_globs) -> list[Path]:
    """Paths as given (missing ones are an error) and glob patterns (matching nothing is fine), in order."""
    if isinstance(paths_or_globs, (str, os.PathLike)):
        paths_or_globs = [paths_or_globs]
    out = []
    for item in paths_or_globs:
        if glob.has_magic(str(item)):
            out.extend(Path(p) for p in sorted(glob.glob(str(item))))
        elif not Path(item).exists():
            raise FileNotFoundError(f"no results at {str(item)!r}")
        else:
            out.append(Path(item))
    return out


def _rows_of_file(path: Path) -> list[dict]:
    data = read_record(path)
    if "per_domain" in data:  # a training run's own metrics.json
        return [{**row, "source": str(path)} for row in tidy(data, run_dir=str(path.parent))]
    if "runs" not in data:  # a notebook that records scalars only (01): its numbers, one row each
        return [{**row, "source": str(path)} for row in scalar_rows(data, path.stem, str(path))]
    rows = []
    for i, metrics in enumerate(data["runs"]):
        run_rows = tidy(metrics, run_dir=metrics.get("run_dir"))
        for row in run_rows:
            row["run"], row["source"] = row["run_dir"] or f"{path}#{i}", str(path)
        rows.extend(run_rows)
    return rows


def scalar_rows(record: dict, stage: str, run: str) -> list[dict]:
    """One row per number in the nested dicts of a notebook's record (lists and its parameters left out):
    metric is the key path, `convergence/tv/final_gap/64`; stage is the notebook's slug."""
    rows = []

    def walk(value, keys):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, (*keys, str(key)))
        elif _is_number(value):
            rows.append({"stage": stage, "metric": "/".join(keys), "value": float(value)})

    walk({k: v for k, v in record.items() if k != "parameters"}, ())
    return [{**row, "run": run, "run_dir": None} for row in rows]


def collect(paths_or_globs: str | os.PathLike | Iterable) -> pd.DataFrame:
    """The tidy table of every run found in the given files, globs or folders.

    A `.json` file is a run's metrics.json or a notebook's results file; a `.parquet` file is a table this
    module wrote (e.g. a sweep's results.parquet); a folder contributes its metrics.json and results/*.json.
    `source` names the file each row was read from.
    """
    frames, rows = [], []
    for path in _expand(paths_or_globs):
        if path.is_dir():
            inner = [path / METRICS_FILE, *record_files(path / "results")]
            rows.extend(r for p in inner if p.exists() for r in _rows_of_file(p))
        elif path.suffix == ".parquet":
            frames.append(pd.read_parquet(path).assign(source=str(path)))
        else:
            rows.extend(_rows_of_file(path))
    frames.insert(0, pd.DataFrame(rows, columns=list(COLUMNS)))
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames, ignore_index=True)


def stage_per_sweep(df: pd.DataFrame) -> pd.Series:
    """`stage`, marked `stage @ NAME` on rows read from a sweep table runs/NAME/results.parquet.

    A sweep's runs share a configuration of their own (data size, model, steps): they are compared among
    themselves, never averaged with a notebook's runs of the same stage."""
    source = df["source"].fillna("").astype(str)
    sweep = source.str.endswith(".parquet")
    names = source.map(lambda s: Path(s).parent.name)
    return df["stage"].where(~sweep, df["stage"].astype(str) + " @" + names)


def find_inputs(results: str | os.PathLike, numbers=("02", "03", "04")) -> tuple[list[Path], list[str]]:
    """The result files results/NN_*.json of the notebooks `numbers`, and one message per missing one
    saying which notebook makes it."""
    found, missing = [], []
    makers = {p.name[:2]: p for p in notebook_paths()}
    for number in numbers:
        files = record_files(results, f"{number}_*.json")
        found += files
        maker = f"notebooks/{makers[number].name}" if number in makers else f"notebooks/{number}_*.ipynb"
        if not files:
            missing.append(f"{Path(results) / number}_*.json missing: run {maker} or `make study`")
    return found, missing


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
