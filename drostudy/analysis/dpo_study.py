"""Notebook 03's study: every DPO variant x seeds, resumable runs, summaries with 95% intervals, a conclusion.

Methods are labelled by the colour keys of drostudy.plotting: `ordinary`, the robust balls `tv`, `kl`,
`chi2`, and the peers `dr_dpo`, `kldpo`, `group`, `rdpo`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from drostudy.analysis.results import intervals_overlap, mean_pm, t_interval
from drostudy.dpo.run import DPORunConfig, train_and_evaluate
from drostudy.runs import run_all as run_labelled

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
    """Run (or resume) each DPO config into its run folder under `folder` (drostudy.runs.run_all)."""
    return run_labelled(configs, folder, train_and_evaluate, desc="DPO runs")


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
        apart = intervals_overlap(row["mean"] - base["mean"], row["ci95"], base["ci95"]) is False
        rows.append(
            {"label": label, "metric": metric, "mean": row["mean"], "ci95": row["ci95"],
             "vs_ordinary": row["mean"] - base["mean"], "intervals_apart": bool(apart)}
        )  # fmt: skip
    return pd.DataFrame(rows)


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
            f"- {what}: best {best['label']} {mean_pm(best['mean'], best['ci95'])} vs ordinary DPO "
            f"{mean_pm(base['mean'], base['ci95'])}; above ordinary beyond the intervals: "
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
