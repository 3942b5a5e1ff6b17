"""Notebook 03's analysis: its finished runs -> tables with 95% intervals, figures, sentences, findings.

Settings carry the labels of every results table (drostudy.config.setting_label): `ordinary`, the robust
balls with their radius (`tv 0.2`, `kl 0.1`, `chi2 0.25`) and the peers `dr_dpo`, `kldpo`, `group_eg`,
`rdpo`, `wdpo`. `results_frame` feeds the paired comparisons of drostudy.analysis.stats. The plan and the
runs are drostudy.dpo.study's.
"""

from __future__ import annotations

import pandas as pd

from drostudy import plotting
from drostudy.analysis import stats
from drostudy.analysis.results import intervals_overlap, mean_pm
from drostudy.analysis.results import summary as results_summary

METRICS = ("accuracy", "margin", "correct", "correct_before", "kl")
COMPARED = ("accuracy", "margin", "correct", "kl")  # correct_before is the reference's: equal everywhere


def _long(runs: list[dict], metrics: tuple[str, ...]) -> pd.DataFrame:
    """Per run, every domain's `metrics` (split "id" for training domains, else "ood") and the split means
    as domain "mean": columns setting, seed, split, domain, metric, value."""
    rows = []
    for run in runs:
        seed, train = run["config"]["seed"], set(run["config"]["train_domains"])
        for domain, values in run["per_domain"].items():
            split = "id" if domain in train else "ood"
            rows += [(run["label"], seed, split, domain, m, values[m]) for m in metrics if m in values]
        for split, part in (("id", "in_distribution"), ("ood", "out_of_distribution")):
            rows += [
                (run["label"], seed, split, "mean", m, run[part][m]) for m in metrics if m in run[part]
            ]
    return pd.DataFrame(rows, columns=["setting", "seed", "split", "domain", "metric", "value"])


def tidy(runs: list[dict]) -> pd.DataFrame:
    """One row per (run, domain, metric), plus the pseudo-domains "ID mean" and "OOD mean" per run."""
    long = _long(runs, METRICS)
    means = long["split"].map({"id": "ID mean", "ood": "OOD mean"})
    long["domain"] = long["domain"].where(long["domain"] != "mean", means)
    return long.rename(columns={"setting": "label"})[["label", "seed", "domain", "metric", "value"]]


def results_frame(runs: list[dict]) -> pd.DataFrame:
    """The long table of drostudy.analysis.stats (RESULT_COLUMNS): `_long` of the compared metrics."""
    frame = _long(runs, COMPARED).assign(stage="dpo")
    return frame[["stage", "setting", "seed", "split", "domain", "metric", "value"]]


def summary(runs: list[dict]) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds per (label, domain, metric): columns label, domain, metric, mean,
    n, ci95, ci_low, ci_high (drostudy.analysis.results.summary)."""
    long = tidy(runs)
    out = results_summary(long, by=("label", "domain"))
    # run order for labels and domains (training domains, held-out ones, then the means), not alphabetical
    order = {c: {v: i for i, v in enumerate(long[c].unique())} for c in ("label", "domain")}
    out = out.sort_values(["label", "domain"], key=lambda c: c.map(order[c.name]), kind="stable")
    return out.reset_index(drop=True)


def versus_ordinary(table: pd.DataFrame, domain: str = "OOD mean") -> pd.DataFrame:
    """Per label and metric on `domain`: mean, difference to ordinary and whether the intervals overlap."""
    part = table[table["domain"] == domain].set_index(["metric", "label"])
    rows = []
    for (metric, label), row in part.iterrows():
        base = part.loc[(metric, "ordinary")]
        apart = intervals_overlap(row["mean"] - base["mean"], row["ci95"], base["ci95"]) is False
        rows.append(
            {
                "label": label,
                "metric": metric,
                "mean": row["mean"],
                "ci95": row["ci95"],
                "vs_ordinary": row["mean"] - base["mean"],
                "intervals_apart": bool(apart),
            }
        )
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
        if part.empty:  # no greedy answers in this run
            continue
        best = part.iloc[0]
        base = part[part["label"] == "ordinary"].iloc[0]
        apart = part[part["intervals_apart"]]
        better, worse = apart[apart["vs_ordinary"] > 0], apart[apart["vs_ordinary"] < 0]
        lines.append(
            f"- {what}: best {best['label']}: {mean_pm(best['mean'], best['ci95'])} vs ordinary DPO "
            f"{mean_pm(base['mean'], base['ci95'])}; above ordinary beyond the intervals: "
            f"{', '.join(better['label']) or 'none'}; below: {', '.join(worse['label']) or 'none'}."
        )
    kl = vs[vs["metric"] == "kl"].set_index("label")["mean"]
    lines.append(
        f"- KL to the reference (nats per response): ordinary: {kl['ordinary']:.3f}; "
        + ", ".join(f"{k}: {v:.3f}" for k, v in kl.drop("ordinary").items())
        + "."
    )
    before = table[(table["metric"] == "correct_before") & (table["domain"] == "OOD mean")]["mean"]
    if len(before):
        lines.append(
            f"- The reference policy answered {before.mean():.3f} correctly before fine-tuning."
        )
    return "\n".join(lines)


def paired_conclusion(comparisons: pd.DataFrame, headline: str, target: float) -> str:
    """Sentences from the comparisons table (drostudy.analysis.stats): the headline setting's paired OOD-mean
    accuracy difference to ordinary DPO, whether its half-width meets `target`, and every resolved and
    unresolved comparison on that endpoint (Holm-adjusted verdicts)."""
    ood_mean = (comparisons["split"] == "ood") & (comparisons["domain"] == "mean")
    end = comparisons[ood_mean & (comparisons["metric"] == "accuracy")].set_index("setting")
    row = end.loc[headline]
    half = (row["ci_high"] - row["ci_low"]) / 2
    met = "met" if half <= target else "NOT met"
    lines = [
        f"Primary: {headline} - ordinary, OOD-mean preference accuracy, paired over {row['n_seeds']} seeds: "
        f"{row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] (half-width {half:.4f}; "
        f"target <= {target}: {met}); verdict {row['verdict']}"
        f"{stats.fragility_note(row['ci_low'], row['ci_high'])}, MDE {row['mde']:.4f}."
    ]
    for verdict in ("better", "worse", "not resolved"):
        part = end[end["verdict"] == verdict]
        items = [
            f"{s}: {r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
            for s, r in part.iterrows()
        ]
        lines.append(f"- vs ordinary, {verdict} (Holm): {'; '.join(items) or 'none'}.")
    return "\n".join(lines)


def conclusion_text(
    comparisons: pd.DataFrame, table: pd.DataFrame, headline: str, target: float, seeds: int
) -> str:
    """What the notebook records as its conclusion: `paired_conclusion`, then `conclusion`."""
    return paired_conclusion(comparisons, headline, target) + "\n" + conclusion(table, seeds)


def findings(text: str) -> str:
    """`conclusion_text` as Markdown, for IPython.display.Markdown: a heading, each lead sentence a
    paragraph, its `- ` lines a list."""
    blocks, previous = ["### What was found"], ""
    for line in text.splitlines():
        bullet = line.startswith("- ")
        if not (bullet and previous.startswith("- ")):
            blocks.append("")  # a blank line opens each paragraph and each list
        blocks.append(line)
        previous = line
    return "\n".join(blocks)


def setting_colors(labels) -> dict[str, str]:
    """Each setting in its method's colour (drostudy.plotting.METHOD_COLORS: `tv 0.2` in tv's orange, the
    ordinary baseline black); a setting whose method has none takes plotting.color_map's."""
    distinct = list(dict.fromkeys(map(str, labels)))
    fallback = plotting.color_map(distinct)
    return {v: plotting.METHOD_COLORS.get(v.split()[0], fallback[v]) for v in distinct}


def per_domain_figure(table: pd.DataFrame, metric: str, y_title: str, train_domains: str):
    """Bars of `metric` per domain and setting with their 95% intervals over seeds, from `summary(...)`."""
    part = table[table["metric"] == metric]
    seeds = int(part["n"].max())
    # the subtitle on its own line: one line of both overflowed a 900-pixel PNG
    title = f"{y_title} per domain<br><sup>train: {train_domains}; mean and 95% CI over {seeds} seed(s)</sup>"
    fig = plotting.bar_with_ci(
        part,
        x="domain",
        y="mean",
        color="label",
        ci_low="ci_low",
        ci_high="ci_high",
        title=title,
        y_title=y_title,
    )
    colors = setting_colors(part["label"])
    for trace in fig.data:
        trace.marker.color = colors[trace.name]
    return fig
