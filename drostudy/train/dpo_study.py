"""Notebook 03's study: every DPO variant x seeds, resumable runs, summaries with 95% intervals, a conclusion.

Methods are labelled by the colour keys of drostudy.plotting: `ordinary`, the robust balls `tv`, `kl`,
`chi2`, and the peers `dr_dpo`, `kldpo`, `group`, `rdpo`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from drostudy.progress import runs_planned, tqdm
from drostudy.results import t_interval
from drostudy.train.common import run_folder, run_or_resume
from drostudy.train.dpo import DPORunConfig, train_and_evaluate

METRICS = ("accuracy", "margin", "correct", "correct_before", "kl")
PEERS = ("dr_dpo", "kldpo", "group", "rdpo")


def method_overrides(radii: dict[str, float]) -> dict[str, dict]:
    """{label: DPORunConfig overrides}: ordinary, one robust ball per divergence in `radii`, the peers."""
    methods = {"ordinary": {"loss": "ordinary"}}
    methods |= {d: {"loss": "robust", "divergence": d, "radius": r} for d, r in radii.items()}
    return methods | {peer: {"loss": peer} for peer in PEERS}


def study_configs(base: DPORunConfig, methods: dict[str, dict], seeds) -> list[tuple[str, DPORunConfig]]:
    """(label, config) for every method and seed, seeds outermost (a partial run covers every method)."""
    return [
        (label, dataclasses.replace(base, seed=seed, **overrides))
        for seed in seeds
        for label, overrides in methods.items()
    ]


def run_all(configs: list[tuple[str, DPORunConfig]], folder: str | Path) -> list[dict]:
    """Run (or resume) each config into its `run_folder` under `folder`; each metrics dict gains its
    `label`."""
    runs = []
    runs_planned(len(configs))
    for label, config in tqdm(configs, desc="DPO runs"):
        out = run_folder(folder, label, config)
        runs.append({**run_or_resume(config, out, train_and_evaluate), "label": label})
    return runs


def tidy(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, domain, metric), plus the pseudo-domains "ID mean" and "OOD mean" per run."""
    rows = []
    for run in runs:
        config = run["config"]
        for domain, values in run["per_domain"].items():
            for metric in METRICS:
                rows.append((run["label"], config["seed"], domain, metric, values[metric]))
        for name, part in (("ID mean", "in_distribution"), ("OOD mean", "out_of_distribution")):
            rows += [
                (run["label"], config["seed"], name, m, run[part][m]) for m in METRICS if m in run[part]
            ]
    return pd.DataFrame(rows, columns=["label", "seed", "domain", "metric", "value"])


def summary(runs: list[dict]) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds per (label, domain, metric): columns mean, ci95, ci_low, ci_high."""
    rows = []
    for (label, domain, metric), values in tidy(runs).groupby(["label", "domain", "metric"], sort=False):
        mean, half = t_interval(values["value"].to_numpy())
        rows.append({"label": label, "domain": domain, "metric": metric, "mean": mean, "ci95": half})
    out = pd.DataFrame(rows)
    out["ci_low"], out["ci_high"] = out["mean"] - out["ci95"], out["mean"] + out["ci95"]
    return out


def versus_ordinary(table: pd.DataFrame, domain: str = "OOD mean") -> pd.DataFrame:
    """Per label and metric on `domain`: mean, difference to ordinary and whether the intervals overlap."""
    part = table[table["domain"] == domain].set_index(["metric", "label"])
    rows = []
    for (metric, label), row in part.iterrows():
        base = part.loc[(metric, "ordinary")]
        apart = abs(row["mean"] - base["mean"]) > row["ci95"] + base["ci95"]  # NaN (one seed): False
        rows.append(
            {"label": label, "metric": metric, "mean": row["mean"], "ci95": row["ci95"],
             "vs_ordinary": row["mean"] - base["mean"], "intervals_apart": bool(apart)}
        )  # fmt: skip
    return pd.DataFrame(rows)


def _fmt(mean: float, half: float) -> str:
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def conclusion(table: pd.DataFrame, seeds: int) -> str:
    """Sentences written from `summary(...)`: the best method out of distribution on preference accuracy
    and on answers, how each differs from ordinary DPO, and the KL each paid."""
    vs = versus_ordinary(table)
    lines = [f"Out-of-distribution means over {seeds} seed(s) (95% t-interval where seeds >= 2):"]
    for metric, what in (
        ("accuracy", "implicit-reward preference accuracy"),
        ("correct", "answers correct"),
    ):
        part = vs[vs["metric"] == metric].sort_values("mean", ascending=False)
        best = part.iloc[0]
        base = part[part["label"] == "ordinary"].iloc[0]
        apart = part[part["intervals_apart"]]
        better, worse = apart[apart["vs_ordinary"] > 0], apart[apart["vs_ordinary"] < 0]
        lines.append(
            f"- {what}: best {best['label']} {_fmt(best['mean'], best['ci95'])} vs ordinary DPO "
            f"{_fmt(base['mean'], base['ci95'])}; above ordinary beyond the intervals: "
            f"{', '.join(better['label']) or 'none'}; below: {', '.join(worse['label']) or 'none'}."
        )
    kl = vs[vs["metric"] == "kl"].set_index("label")["mean"]
    lines.append(
        f"- KL to the reference (nats per response): ordinary {kl['ordinary']:.3f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in kl.drop("ordinary").items())
        + "."
    )
    before = table[(table["metric"] == "correct_before") & (table["domain"] == "OOD mean")]["mean"]
    lines.append(f"- The reference policy answered {before.mean():.3f} correctly before fine-tuning.")
    return "\n".join(lines)
