"""Notebook 04's exact testbed, from its finished runs (drostudy.rl.testbed_plan): the figures, the primary
comparison, the exploratory ones, over-optimisation and convergence, in sentences and tables."""

from __future__ import annotations

import pandas as pd
import plotly.express as px

from drostudy.analysis.results import mean_pm, t_interval
from drostudy.analysis.stats import fragility_note, half_width
from drostudy.config import setting_label

BASELINE = setting_label("ordinary")  # the plain algorithm, every comparison's baseline
STAGE = "rl_testbed"
# (split, metric) of each exploratory comparison, in the order the findings list them
EXPLORATORY = (
    ("ood", "correct"),
    ("id", "correct"),
    ("ood", "reward"),
    ("ood", "learned_reward"),
    ("ood", "kl"),
)


def convergence_figure(table: pd.DataFrame, divergence: str, radius: float):
    """|gap| to the full-batch robust optimum against steps (log-log), one line per batch size."""
    shown = table.assign(abs_gap=table.gap.abs().clip(lower=1e-6))
    return px.line(
        shown,
        x="step",
        y="abs_gap",
        color="batch_size",
        log_x=True,
        log_y=True,
        markers=True,
        title=f"|gap| to the full-batch {divergence} {radius:g} robust optimum vs steps, per batch size",
    )


def domain_table(results: pd.DataFrame, train_domains) -> pd.DataFrame:
    """Mean and standard error over seeds per setting, domain and metric (ID domains marked " (ID)")."""
    per_domain = results[results.domain != "mean"]
    keys = ["setting", "domain", "metric"]
    table = per_domain.groupby(keys)["value"].agg(["mean", "sem"]).reset_index()
    table["domain"] = table["domain"].map(lambda d: d + (" (ID)" if d in train_domains else ""))
    return table


def domains_figure(table: pd.DataFrame, settings: list[str]):
    """Bars of a `domain_table`: expected correctness, learned reward and KL per domain and setting."""
    fig = px.bar(
        table[table.metric.isin(["correct", "reward", "kl"])],
        x="domain",
        y="mean",
        error_y="sem",
        color="setting",
        barmode="group",
        facet_row="metric",
        category_orders={"setting": ["reference", *settings]},
        title="testbed: exact expected correctness, learned reward and KL per held-out domain "
        "(mean ± sem over seeds)",
    )
    fig.update_yaxes(matches=None, title=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(height=750)
    return fig


def paired_figure(comparisons: pd.DataFrame, settings: list[str]):
    """Paired difference of each setting to the baseline on the OOD mean, per metric, 95% intervals."""
    ood = comparisons[(comparisons.split == "ood") & (comparisons.domain == "mean")]
    fig = px.scatter(
        ood,
        x="setting",
        y="mean_diff",
        error_y=ood.ci_high - ood.mean_diff,
        facet_col="metric",
        facet_col_wrap=2,
        facet_row_spacing=0.12,
        color="verdict",
        category_orders={"setting": settings, "verdict": ["better", "worse", "not resolved"]},
        title=f"testbed: paired difference setting - {BASELINE} on the OOD mean, 95% intervals",
    )
    fig.update_layout(height=650)
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.add_hline(y=0, line_dash="dot")
    return fig


def overoptimisation_figure(curves: pd.DataFrame):
    """Learned reward and expected correctness along training (means over each split's domains)."""
    keys = ["setting", "split", "step", "metric"]
    shown = curves[curves.metric.isin(["reward", "correct"])]
    means = shown.groupby(keys, as_index=False)["value"].mean()
    fig = px.line(
        means,
        x="step",
        y="value",
        color="setting",
        line_dash="split",
        facet_col="metric",
        markers=True,
        title="over-optimisation: learned reward up, expected correctness down "
        "(means over domains, seed 0)",
    )
    fig.update_yaxes(matches=None, showticklabels=True)
    return fig


def primary_row(comparisons: pd.DataFrame, stage: str, setting: str, metric: str = "correct"):
    """The comparisons row of `setting` vs the baseline on the OOD mean of `metric` in `stage`."""
    hit = comparisons[
        (comparisons.stage == stage)
        & (comparisons.setting == setting)
        & (comparisons.split == "ood")
        & (comparisons.domain == "mean")
        & (comparisons.metric == metric)
    ]
    if len(hit) != 1:
        raise ValueError(f"no single OOD-mean {metric} row for {stage}/{setting}; got {len(hit)}")
    return hit.iloc[0]


def _describe(row) -> str:
    return (
        f"{row.mean_diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}] over {row.n_seeds} paired seeds "
        f"({row.verdict}{fragility_note(row.ci_low, row.ci_high)}; half-width {half_width(row):.4f}, "
        f"MDE {row.mde:.4f})"
    )


def primary_text(comparisons: pd.DataFrame, setting: str, target: float) -> tuple[str, bool]:
    """The primary comparison's sentence and whether its interval's half-width is <= `target`."""
    row = primary_row(comparisons, STAGE, setting)
    met = bool(half_width(row) <= target)
    text = (
        f"Primary (testbed): {setting} vs {BASELINE}, OOD-mean expected correctness: {_describe(row)}; "
        f"half-width target <= {target}: {'met' if met else 'NOT met'}."
    )
    return text, met


def exploratory_table(comparisons: pd.DataFrame, stage: str) -> pd.DataFrame:
    """One row per setting of `stage`, one column per EXPLORATORY (split, metric) found: the paired
    difference to the baseline ± its half-width (verdict), on the split's mean."""
    part = comparisons[(comparisons.stage == stage) & (comparisons.domain == "mean")]
    table = {}
    for setting in part.setting.unique():
        cells = {}
        for split, metric in EXPLORATORY:
            hit = part[(part.setting == setting) & (part.split == split) & (part.metric == metric)]
            if len(hit):
                row = hit.iloc[0]
                cells[f"{split} {metric}"] = (
                    f"{row.mean_diff:+.4f} ± {half_width(row):.4f} ({row.verdict})"
                )
        table[setting] = cells
    return pd.DataFrame.from_dict(table, orient="index").rename_axis(f"setting - {BASELINE}")


def overoptimisation_sentence(results: pd.DataFrame, setting: str = BASELINE) -> str:
    """From paired testbed results: `setting`'s change from the reference policy in OOD-mean learned reward
    and in OOD-mean correctness (per seed, 95% t-interval), and whether that is over-optimisation."""
    ood = results[(results.split == "ood") & (results.domain == "mean")]
    wide = ood.pivot_table(index="seed", columns=["setting", "metric"], values="value")
    changes = {
        m: t_interval((wide[setting, m] - wide["reference", m]).to_numpy())
        for m in ("reward", "correct")
    }
    (reward, reward_half), (correct, correct_half) = changes["reward"], changes["correct"]
    over = reward - reward_half > 0 and correct + correct_half < 0
    verdict = (
        "over-optimised: the proxy rose while correctness fell"
        if over
        else "not shown beyond seed noise"
    )
    return (
        f"Over-optimisation ({setting}, OOD mean, vs the reference policy): learned reward "
        f"{mean_pm(reward, reward_half, '+.3f')}, expected correctness "
        f"{mean_pm(correct, correct_half, '+.4f')} -> {verdict}."
    )


def convergence_sentence(table: pd.DataFrame, optimum: float) -> str:
    """The final gap of each batch size to the full-batch robust optimum."""
    last = table[table.step == table.step.max()].set_index("batch_size")["gap"]
    gaps = ", ".join(f"batch {b}: {g:+.4f}" for b, g in last.items())
    first = table[table.step == table.step.min()].set_index("batch_size")["gap"]
    shrank = bool((last.abs() < first.abs()).all())
    closed = "every batch size closed in on it" if shrank else "not every batch size closed in"
    return (
        f"Convergence: robust objective optimum {optimum:.4f}; gap after {int(table.step.max())} steps "
        f"{gaps} ({closed})."
    )
