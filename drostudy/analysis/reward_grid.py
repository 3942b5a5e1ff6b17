"""Notebook 02's paired grid: splits of the domains, settings, the runs -> paired comparisons (stats), shift
severity, the resolution targets and the figures of paired gain.

A stage names one paired experiment: `rm <split>` or `rm <split> noise <fraction>`. Within a stage every
setting ran with the same seeds as `ordinary` (same training subset, head, batch order, label flips and test
pairs), so drostudy.analysis.stats compares them pair by pair.
"""

from __future__ import annotations

import dataclasses
import warnings

import pandas as pd
import plotly.graph_objects as go

from drostudy import plotting
from drostudy.analysis import stats
from drostudy.config import ball_is_point
from drostudy.reward.run import RMConfig

# train domains -> held-out domains. A: the study's default; B and C move math/code and safety across.
SPLITS = {
    "A": (("math", "code", "knowledge"), ("reasoning", "safety")),
    "B": (("reasoning", "knowledge", "safety"), ("math", "code")),
    "C": (("math", "reasoning"), ("code", "knowledge", "safety")),
}
STAGE = "rm"


def split_overrides(split: str) -> dict:
    """RMConfig overrides that train on `split`'s domains and hold out the rest."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    train, held_out = SPLITS[split]
    return {"train_domains": train, "eval_domains": held_out}


def setting_name(config: RMConfig) -> str:
    """The setting within a stage: `ordinary`, `robust tv 0.5`, `group_robust tv 0.5`, `doro tv 0.5 eps 0.1`."""
    if config.outlier_fraction > 0:
        return f"doro {config.divergence} {config.radius:g} eps {config.outlier_fraction:g}"
    if ball_is_point(config.divergence, config.radius):
        return "ordinary"
    robust = "group_robust" if config.level == "group" else "robust"
    return f"{robust} {config.divergence} {config.radius:g}"


def stage_name(config: RMConfig) -> str:
    """`rm <split>` (+ ` noise <fraction>`): the paired experiment a run belongs to."""
    train = tuple(config.train_domains)
    split = next((k for k, (t, _) in SPLITS.items() if t == train), "+".join(train))
    return f"{STAGE} {split}" + (f" noise {config.label_noise:g}" if config.label_noise else "")


def run_label(config: RMConfig) -> str:
    """Label of a run (its folder name stem): `<stage> | <setting>`."""
    return f"{stage_name(config)} | {setting_name(config)}"


def configs(
    base: RMConfig, plan: list[tuple[str, float, list[dict]]], seeds
) -> list[tuple[str, RMConfig]]:
    """(label, config) for every (split, label noise, settings) of `plan` and seed; ordinary is added to each."""
    out = []
    for split, noise, settings in plan:
        for setting in [{}, *settings]:
            for seed in seeds:
                overrides = split_overrides(split) | {"label_noise": noise, "seed": seed} | setting
                config = dataclasses.replace(base, **overrides)
                out.append((run_label(config), config))
    return out


def result_rows(runs: list[dict]) -> pd.DataFrame:
    """Long table (stats.RESULT_COLUMNS) of test accuracy per run and domain, plus each split's mean."""
    rows = []
    for run in runs:
        config = RMConfig(**run["config"])
        for domain, values in run["per_domain"].items():
            if domain in config.train_domains or domain in config.eval_domains:
                split = "id" if domain in config.train_domains else "ood"
                key = dict(stage=stage_name(config), setting=setting_name(config), seed=config.seed)
                rows.append(key | dict(split=split, domain=domain, metric="accuracy"))
                rows[-1]["value"] = values["accuracy"]
    return stats.add_domain_mean(pd.DataFrame(rows, columns=list(stats.RESULT_COLUMNS)))


def comparisons(rows: pd.DataFrame, primary: tuple[str, str]) -> pd.DataFrame:
    """stats.paired_comparisons of every setting against ordinary, Holm-corrected per endpoint, except the
    `primary` (stage, setting) comparison on the OOD mean, named before the run: its verdict is unadjusted."""
    with (
        warnings.catch_warnings()
    ):  # settings run on fewer seeds than ordinary: compared on the shared ones
        warnings.filterwarnings("ignore", message="dropping unpaired seeds")
        table = stats.paired_comparisons(rows)
    is_primary = (
        (table.stage == primary[0])
        & (table.setting == primary[1])
        & (table.split == "ood")
        & (table.domain == "mean")
    )
    if not is_primary.any():
        raise ValueError(f"primary comparison {primary} is not among the results")
    table.loc[is_primary, "verdict"] = [
        stats.verdict(r.mean_diff, r.p_value) for r in table[is_primary].itertuples()
    ]
    return table


def severity(rows: pd.DataFrame) -> pd.Series:
    """Shift severity of each stage: ordinary training's ID-mean minus OOD-mean accuracy, mean over seeds."""
    means = rows[(rows.setting == "ordinary") & (rows.domain == "mean")]
    by = means.groupby(["stage", "split"])["value"].mean().unstack("split")
    return (by["id"] - by["ood"]).rename("severity")


def targets(table: pd.DataFrame, stage: str, settings, mean_target=0.015, domain_target=0.03):
    """Half-width of the OOD intervals of `settings` in `stage` against the targets (mean / each domain)."""
    part = table[(table.stage == stage) & (table.split == "ood") & table.setting.isin(settings)]
    out = part[["setting", "domain", "n_seeds", "mean_diff"]].copy()
    out["half_width"] = stats.half_width(part)
    out["target"] = [mean_target if d == "mean" else domain_target for d in out.domain]
    out["met"] = out.half_width <= out.target
    return out.reset_index(drop=True)


def parse_setting(setting: str) -> dict:
    """{ambiguity: ordinary/robust/group_robust/doro, divergence, radius} of a setting name."""
    parts = setting.split()
    if len(parts) < 3:
        return {"ambiguity": parts[0], "divergence": None, "radius": 0.0}
    return {"ambiguity": parts[0], "divergence": parts[1], "radius": float(parts[2])}


def parse_stage(stage: str) -> dict:
    """{stage_kind, train_split, label_noise} of a stage name `<kind> [<split>] [noise <f>]`."""
    parts = stage.split()
    noise = float(parts[parts.index("noise") + 1]) if "noise" in parts else 0.0
    split = parts[1] if len(parts) > 1 and parts[1] != "noise" else ""
    return {"stage_kind": parts[0], "train_split": split, "label_noise": noise}


def gain_figure(frame: pd.DataFrame, x: str, color: str, title: str, x_title: str) -> go.Figure:
    """Paired gain (mean_diff) with its 95% interval against `x`, one line per `color` value."""
    fig = go.Figure()
    colors = plotting.color_map([str(k) for k in frame[color].unique()])
    for key, part in frame.groupby(color, sort=False):
        part = part.sort_values(x)
        plotting.add_gain_line(fig, part, x, str(key), colors[str(key)])
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(template=plotting.TEMPLATE, title=title)
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="paired gain in OOD-mean accuracy vs ordinary")
    return fig


def ood_mean(table: pd.DataFrame) -> pd.DataFrame:
    """OOD-mean rows of a comparisons table with the parsed stage and setting columns added."""
    part = table[(table.split == "ood") & (table.domain == "mean")].reset_index(drop=True)
    parsed = pd.DataFrame(
        [parse_stage(s) | parse_setting(t) for s, t in zip(part.stage, part.setting, strict=True)]
    )
    return pd.concat([part, parsed], axis=1)


def conclusion(table: pd.DataFrame, primary: tuple[str, str], sev: pd.Series, met: pd.DataFrame) -> str:
    """Sentences from the comparisons: the primary result, the resolved ones, the targets, per split."""
    ood = ood_mean(table)
    p = ood[(ood.stage == primary[0]) & (ood.setting == primary[1])].iloc[0]
    lines = [
        f"Primary ({primary[1]} vs ordinary, {primary[0]}, OOD mean, {p.n_seeds} paired seeds): "
        f"{p.mean_diff:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}], MDE {p.mde:.4f}: {p.verdict}"
        f"{stats.fragility_note(p.ci_low, p.ci_high)}."
    ]
    for v in ("better", "worse"):
        hits = ood[ood.verdict == v]
        names = [f"{r.setting} in {r.stage} ({r.mean_diff:+.3f})" for r in hits.itertuples()]
        lines.append(f"OOD mean {v} than ordinary after Holm: {', '.join(names) or 'none'}.")
    unresolved = ood[ood.verdict == "not resolved"]
    if len(unresolved):
        lines.append(
            f"Not resolved on the OOD mean: {len(unresolved)} comparisons, MDE from "
            f"{unresolved.mde.min():.3f} to {unresolved.mde.max():.3f}."
        )
    lines.append(
        "Shift severity (ordinary ID - OOD): " + ", ".join(f"{k} {v:+.3f}" for k, v in sev.items()) + "."
    )
    lines.append(
        f"Resolution targets met: {int(met.met.sum())} of {len(met)} headline intervals "
        f"(largest OOD-mean half-width {met[met.domain == 'mean'].half_width.max():.4f}, largest per-domain "
        f"{met[met.domain != 'mean'].half_width.max():.4f})."
    )
    return "\n".join(lines)
