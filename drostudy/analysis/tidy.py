"""Run metrics -> one tidy table: the rows of training runs, notebook records and sweep tables.

Inputs are the `metrics.json` of a training run (layout in `drostudy.runs`) and the notebook result
records `results/NN_slug.json` (+ `NN_slug.runs.json`, see drostudy.analysis.records) = {"runs":
[metrics, ...], ...}, or, from a notebook that trains nothing (01), any nested dict of numbers (one row per
number, see `scalar_rows`). The tidy table has one row per (run, domain, metric) with the columns in
`COLUMNS`; `run` identifies the run the row came from. drostudy.analysis.results summarises it and
re-exports these names.
"""

from __future__ import annotations

import glob
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

    `in_distribution` is True for the run's training domains. Non-numeric metric values are left out. A run
    with a `knob` (ordinary training at another beta, weight decay, ...) gives no rows.
    """
    if _field(metrics, "knob"):
        # ordinary training moved along its own knob (issue 24): read by its notebook's matched comparison,
        # never pooled with the radius-0 "ordinary" runs it shares stage, method and radius with
        return []
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
