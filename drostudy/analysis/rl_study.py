"""Notebook 04's SmolLM2 RLOO part, from its finished runs (metrics dicts of drostudy.rl.run): the results
rows, training curves, gains over the reference policy, over-optimisation and the figures; and the notebook's
findings in Markdown, from both parts' numbers (`findings_markdown`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.express as px

from drostudy.analysis import testbed_study
from drostudy.analysis.results import mean_pm, summary, t_interval
from drostudy.analysis.stats import RESULT_COLUMNS, add_domain_mean
from drostudy.analysis.tidy import tidy
from drostudy.config import setting_label
from drostudy.plotting import color_map

STAGE = "rl_llm"
LLM_METRICS = ("learned_reward", "correct", "kl")
HISTORY_METRICS = {
    "rewards/learned_reward/mean": "learned_reward",
    "samples/correct": "correct",
    "kl": "kl",
}


def run_setting(record: dict) -> str:
    """The setting of a run in a results table (drostudy.config.setting_label): `ordinary`, `tv 0.2`..."""
    config = record["config"]
    return setting_label(record["method"], config["divergence"], config["radius"])


def llm_results(records: list[dict]) -> pd.DataFrame:
    """RESULT_COLUMNS rows (stage rl_llm) of the RLOO runs: per domain and the split means of
    learned_reward, correct and kl; the setting of each run is `run_setting`'s."""
    out = []
    for record in records:
        config, setting = record["config"], run_setting(record)
        for domain, values in record["per_domain"].items():
            split = "id" if domain in config["train_domains"] else "ood"
            out += [
                {
                    "stage": STAGE,
                    "setting": setting,
                    "seed": record["seed"],
                    "split": split,
                    "domain": domain,
                    "metric": m,
                    "value": float(values[m]),
                }
                for m in LLM_METRICS
            ]
    return add_domain_mean(pd.DataFrame(out, columns=list(RESULT_COLUMNS)))


def history_frame(runs: Sequence[dict]) -> pd.DataFrame:
    """Training curves of RL runs (metrics dicts) as a long DataFrame: method, seed, step, metric, value.

    metric: learned_reward (mean reward-model score of the sampled completions), correct (their
    reference-graded correctness) and kl (TRL's per-token KL to the reference), from each run's history.
    """
    rows = [
        {
            "method": run["method"],
            "seed": run["seed"],
            "step": entry["step"],
            "metric": name,
            "value": entry[key],
        }
        for run in runs
        for entry in run["history"]
        for key, name in HISTORY_METRICS.items()
        if key in entry
    ]
    return pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])


def per_domain_figure(runs: Sequence[dict], train_domains):
    """Learned reward, correctness and KL per domain and method: means over seeds, 95% intervals."""
    df = pd.DataFrame([row for run in runs for row in tidy(run, run.get("run_dir"))])
    table = summary(df, by=("method", "domain"))
    shown = table[table["metric"].isin(LLM_METRICS)].copy()
    shown["domain"] = shown["domain"].map(lambda d: d + (" (ID)" if d in train_domains else ""))
    fig = px.bar(
        shown,
        x="domain",
        y="mean",
        error_y="ci95",
        color="method",
        barmode="group",
        facet_row="metric",
        color_discrete_map=color_map(shown["method"].unique()),
        title="SmolLM2 RLOO per domain (ID: a training domain); mean over seeds, 95% intervals",
    )
    fig.update_yaxes(matches=None, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(height=700)
    return fig


def training_figure(runs: Sequence[dict]):
    """The runs' training curves (`history_frame`), means over seeds per method."""
    curves = history_frame(runs).groupby(["method", "step", "metric"], as_index=False)["value"].mean()
    fig = px.line(
        curves,
        x="step",
        y="value",
        color="method",
        facet_col="metric",
        markers=True,
        title="SmolLM2 training curves: learned reward vs reference-graded correctness of the samples, "
        "and KL",
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    return fig


def gains(runs: Sequence[dict]) -> pd.DataFrame:
    """Per run and domain: change from the reference policy in learned reward and in correctness.

    Returns a DataFrame (method, seed, domain, in_distribution, reward_gain, correct_gain). Reward
    over-optimisation shows as a reward gain that brings no correctness gain (or a loss).
    """
    rows = []
    for run in runs:
        train = set(run["config"]["train_domains"])
        for domain, s in run["per_domain"].items():
            rows.append(
                {
                    "method": run["method"],
                    "seed": run["seed"],
                    "domain": domain,
                    "in_distribution": domain in train,
                    "reward_gain": s["learned_reward"] - s["learned_reward_before"],
                    "correct_gain": s["correct"] - s["correct_before"],
                }
            )
    return pd.DataFrame(rows)


def overoptimisation_text(gain_table: pd.DataFrame) -> str:
    """One sentence per method and split (ID/OOD) from a `gains` table: mean gains over seeds (each seed's
    mean over the split's domains) with 95% t-intervals. Over-optimised means the learned reward rose
    beyond its interval while correctness did not rise; a reward change inside the seed noise is said so."""
    per_seed = gain_table.groupby(["method", "in_distribution", "seed"])[["reward_gain", "correct_gain"]]
    lines = []
    for (method, in_dist), part in per_seed.mean().groupby(level=[0, 1]):
        reward, reward_half = t_interval(part["reward_gain"].to_numpy())
        correct, correct_half = t_interval(part["correct_gain"].to_numpy())
        if math.isnan(reward_half):  # one seed: no interval
            verdict = ("over-optimised" if reward > 0 and correct <= 0 else "not over-optimised") + (
                " by the signs of one seed"
            )
        elif reward - reward_half <= 0:
            verdict = (
                "the learned reward did not rise beyond seed noise, so nothing to call over-optimisation"
            )
        else:
            verdict = "over-optimised" if correct <= 0 else "not over-optimised"
        where = "in distribution" if in_dist else "out of distribution"
        lines.append(
            f"{method}, {where}: learned reward {mean_pm(reward, reward_half, '+.3f')}, "
            f"reference-graded correctness {mean_pm(correct, correct_half, '+.3f')} vs the reference "
            f"policy ({verdict})."
        )
    return "\n".join(lines)


def llm_sentence(comparisons: pd.DataFrame, setting: str, seeds: int, steps: int) -> str:
    """The LLM part's robust setting against ordinary on OOD-mean correctness, with its MDE."""
    row = testbed_study.primary_row(comparisons, STAGE, setting)
    return (
        f"LLM part (SmolLM2 RLOO, {seeds} seeds, {steps} steps): {setting} - {testbed_study.BASELINE}, "
        f"OOD-mean correctness {row.mean_diff:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}] "
        f"({row.verdict}; MDE {row.mde:.3f}: differences below it are out of its reach)."
    )


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame (its index as the first column) as a Markdown table."""
    header = [table.index.name or "", *map(str, table.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in table.iterrows():
        cells = ["" if pd.isna(value) else str(value) for value in row]
        lines.append("| " + " | ".join([str(index), *cells]) + " |")
    return "\n".join(lines)


def findings_markdown(
    primary: str,
    exploratory: pd.DataFrame,
    sentences: Sequence[str],
    overoptimisation: str,
    seconds: dict[str, float],
) -> str:
    """Notebook 04's findings in Markdown: the primary comparison, the exploratory table (Holm-corrected
    verdicts), the other sentences (over-optimisation, convergence, the LLM part), the LLM runs'
    over-optimisation lines and the times {part: seconds}."""
    times = ", ".join(f"{part} {s:.0f} s" for part, s in seconds.items())
    parts = [
        f"**{primary}**",
        "Exploratory (Holm over the settings on each quantity; 95% intervals unadjusted), paired "
        f"differences to {testbed_study.BASELINE} on the split means:",
        markdown_table(exploratory),
        *sentences,
        "\n".join(f"- {line}" for line in overoptimisation.splitlines()),
        f"Times: {times} (this machine).",
    ]
    return "\n\n".join(parts)
