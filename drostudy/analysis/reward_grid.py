"""Notebook 02's finished runs -> its results: paired comparisons with ordinary training (stats), shift
severity, the resolution targets, the figures of paired gain and the findings as Markdown.

The runs come from drostudy.reward.study, each labelled `<stage> | <setting>`: the stage is one paired
experiment (`rm <split>`, `rm <split> noise <fraction>`), the setting a drostudy.config.setting_label
(`ordinary`, `tv 0.5`, `group tv 0.5`, `doro tv 0.5 eps 0.1`). Within a stage every setting ran with the
seeds of `ordinary`, so drostudy.analysis.stats compares them pair by pair.
"""

from __future__ import annotations

import warnings

import pandas as pd
import plotly.graph_objects as go

from drostudy import plotting
from drostudy.analysis import matched as matched_lib
from drostudy.analysis import paired, stats
from drostudy.weights import DIVERGENCES

# method names in the setting labels of results recorded before drostudy.config.setting_label
OLD_METHODS = {"group_robust": "group"}


def result_rows(runs: list[dict]) -> pd.DataFrame:
    """Long table (stats.RESULT_COLUMNS) of test accuracy per run and domain, plus each split's mean.

    runs: metrics dicts (drostudy.runs) with their `label` `<stage> | <setting>` and `config`'s seed and
    train/eval domains; a domain in neither is left out.
    """
    rows = []
    for run in runs:
        stage, setting = run["label"].split(" | ")
        config = run["config"]
        for domain, values in run["per_domain"].items():
            if domain in config["train_domains"] or domain in config["eval_domains"]:
                split = "id" if domain in config["train_domains"] else "ood"
                key = dict(stage=stage, setting=setting, seed=config["seed"])
                rows.append(key | dict(split=split, domain=domain, metric="accuracy"))
                rows[-1]["value"] = values["accuracy"]
    return stats.add_domain_mean(pd.DataFrame(rows, columns=list(stats.RESULT_COLUMNS)))


def comparisons(rows: pd.DataFrame, primary: tuple[str, str]) -> pd.DataFrame:
    """stats.paired_comparisons of every setting against ordinary, Holm-corrected per endpoint, except the
    `primary` (stage, setting) comparison on the OOD mean, named before the run: its verdict is unadjusted.
    Ordinary training moved along its own knobs (`ordinary <knob> <value>`) is left out: it is the matched
    baseline (`matched`), not a setting of this family."""
    rows = rows[~is_knob_setting(rows.setting)]
    # settings run on fewer seeds than ordinary: compared on the seeds they share
    with warnings.catch_warnings():
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


def is_knob_setting(settings: pd.Series) -> pd.Series:
    """Whether each setting is ordinary training moved along a knob (`ordinary steps 94`)."""
    return settings.str.startswith("ordinary ")


def knob_rows(rows: pd.DataFrame, stage: str, curve: dict[str, float]) -> pd.DataFrame:
    """`stage`'s rows with every knob setting but those of `curve` (setting -> knob value) left out: the
    robust settings and one knob's curve, what drostudy.analysis.matched reads."""
    keep = ~is_knob_setting(rows.setting) | rows.setting.isin(list(curve))
    return rows[(rows.stage == stage) & keep]


def matched(
    rows: pd.DataFrame, stage: str, curves: dict[str, dict[str, float]], primary: tuple[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, diagnostics) of every robust setting of `stage` against ordinary training matched on
    ID-mean accuracy along each knob of `curves` (knob -> {setting: knob value}), on the OOD mean
    (matched.matched_comparisons, Holm within each knob; stats.COLUMNS) and their seeds left out
    (matched.matched_diagnostics). The `primary` (stage, setting), named before the run, gets its
    unadjusted verdict, as the plain primary does."""
    tables = [pd.DataFrame(columns=list(stats.COLUMNS))]
    notes = [pd.DataFrame(columns=list(matched_lib.DIAGNOSTIC_COLUMNS))]  # no knob: empty tables
    for knob, curve in curves.items():
        part = knob_rows(rows, stage, curve)
        table = matched_lib.matched_comparisons(part, curve, knob_name=knob)
        points = matched_lib.matched_points(part, curve)
        own = points[(points.setting == primary[1]) & points.bracketed & (points.stage == primary[0])]
        at = (table.stage == primary[0]) & (table.setting == primary[1])
        if len(own) >= 2 and at.any():
            p = paired.paired_comparison(own.y, own.y_matched).p_value
            table.loc[at, "verdict"] = paired.verdict(float(table.loc[at, "mean_diff"].iloc[0]), p)
        tables.append(table)
        notes.append(matched_lib.matched_diagnostics(part, curve, knob_name=knob))
    return pd.concat(tables[len(tables) > 1 :], ignore_index=True), pd.concat(
        notes[len(notes) > 1 :], ignore_index=True
    )


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
    """{ambiguity, divergence, radius} of a setting label (drostudy.config.setting_label): the ambiguity is
    the method, `robust` for a bare ball (`tv 0.5`), `group` (`group tv 0.5`), `doro`, `ordinary`, or a
    peer's name (`dr_dpo`); divergence and radius are None and NaN where the label names none (radius 0
    for ordinary). Labels of older results (`robust tv 0.5`, `group_robust tv 0.5`) parse the same way."""
    parts = setting.split()
    if parts[0] in DIVERGENCES:
        parts = ["robust", *parts]
    out = {"ambiguity": OLD_METHODS.get(parts[0], parts[0]), "divergence": None, "radius": float("nan")}
    if parts[0] == "ordinary":
        out["radius"] = 0.0
    if len(parts) > 1 and parts[1] in DIVERGENCES:
        out["divergence"] = parts[1]
        out["radius"] = float(parts[2]) if len(parts) > 2 else float("nan")
    return out


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


def findings_markdown(
    table: pd.DataFrame, primary: tuple[str, str], sev: pd.Series, met: pd.DataFrame
) -> str:
    """What notebook 02 found, as Markdown from its comparisons: the primary result, the comparisons
    resolved either way after Holm, the unresolved ones, each stage's shift severity and the targets."""
    ood = ood_mean(table)
    p = ood[(ood.stage == primary[0]) & (ood.setting == primary[1])].iloc[0]
    lines = [
        f"**Primary** ({primary[1]} vs ordinary, {primary[0]}, OOD mean, {p.n_seeds} paired seeds): "
        f"{p.mean_diff:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}], MDE {p.mde:.4f}: **{p.verdict}**"
        f"{stats.fragility_note(p.ci_low, p.ci_high)}.",
        "",
    ]
    for v in ("better", "worse"):
        hits = ood[ood.verdict == v]
        names = [f"{r.setting} in {r.stage} ({r.mean_diff:+.3f})" for r in hits.itertuples()]
        lines.append(f"- OOD mean {v} than ordinary after Holm: {', '.join(names) or 'none'}.")
    unresolved = ood[ood.verdict == "not resolved"]
    if len(unresolved):
        lines.append(
            f"- Not resolved on the OOD mean: {len(unresolved)} comparisons, MDE from "
            f"{unresolved.mde.min():.3f} to {unresolved.mde.max():.3f}."
        )
    severities = ", ".join(f"{k} {v:+.3f}" for k, v in sev.items())
    lines.append(f"- Shift severity (ordinary ID - OOD): {severities}.")
    lines.append(
        f"- Resolution targets met: {int(met.met.sum())} of {len(met)} headline intervals "
        f"(largest OOD-mean half-width {met[met.domain == 'mean'].half_width.max():.4f}, largest "
        f"per-domain {met[met.domain != 'mean'].half_width.max():.4f})."
    )
    return "\n".join(lines)


def frontier_markdown(
    points: pd.DataFrame,
    matched: pd.DataFrame,
    diagnostics: pd.DataFrame,
    primary: tuple[str, str],
    primary_knob: str,
    target: float = 0.015,
) -> str:
    """What the matched rows (`matched`, its OOD-mean rows) and the frontier (`points`,
    drostudy.analysis.frontier.frontier_points) say, as Markdown: the named matched comparison, per knob
    how many robust settings lie above or below ordinary's curve after Holm and how many robust runs its
    curve brackets (`diagnostics`, matched.matched_diagnostics; a knob bracketing under half is named),
    the TV radius curve's highest point, and the half-widths against `target` (with the seeds it would take)."""
    ood = matched[(matched.split == "ood") & (matched.domain == "mean")]
    name = f"({primary_knob})"
    own = ood[(ood.setting == primary[1]) & ood.baseline.str.endswith(name)]
    if own.empty:
        return f"**Matched**: no comparison; ordinary training ran along no knob named {primary_knob}."
    p = own.iloc[0]
    lines = [
        f"**Matched** ({primary[1]} vs ordinary at the same ID-mean accuracy along {primary_knob}, "
        f"{primary[0]}, OOD mean, {p.n_seeds} bracketed seeds): {p.mean_diff:+.4f} "
        f"[{p.ci_low:+.4f}, {p.ci_high:+.4f}], MDE {p.mde:.4f}: **{p.verdict}**.",
        "",
    ]
    for baseline, part in ood.groupby("baseline", sort=False):
        counts = {v: int((part.verdict == v).sum()) for v in ("better", "worse", "not resolved")}
        resolved = part.dropna(subset=["mean_diff"])
        spread = (
            f"matched gains {resolved.mean_diff.min():+.3f} to {resolved.mean_diff.max():+.3f}"
            if len(resolved)
            else "no setting bracketed on 2 seeds"
        )
        seen = diagnostics[diagnostics.baseline == baseline]
        used, runs = int(seen.seeds_bracketed.sum()), int(seen.n_seeds.sum())
        lines.append(
            f"- {baseline}: {counts['better']} robust settings above ordinary's curve, {counts['worse']} "
            f"below, {counts['not resolved']} not resolved (Holm); {spread}; its curve brackets {used} "
            f"of {runs} robust runs' ID accuracy"
            + (
                " (**it does not bracket most of them**: its rows rest on few seeds)."
                if used < runs / 2
                else "."
            )
        )
    tv = points[points.curve.str.startswith("tv")].sort_values("y_mean")
    if len(tv):
        top = tv.iloc[-1]
        lines.append(
            f"- TV radius curve: highest OOD-mean accuracy {top.y_mean:.4f} at {top.setting} (ID "
            f"{top.x_mean:.4f}); ordinary's knob curves reach OOD {_knob_top(points):.4f} at best."
        )
    rows = ood.dropna(subset=["mean_diff"])
    half = stats.half_width(rows)
    own_half = half[rows.baseline.str.endswith(name)]
    if len(own_half):
        worst = rows.loc[own_half.idxmax()]
        need = paired.seeds_needed(paired.paired_sd(own_half.max(), int(worst.n_seeds)), target)
        lines.append(
            f"- Half-widths of the {primary_knob}-matched rows (OOD mean): {own_half.min():.4f} to "
            f"{own_half.max():.4f} against the target {target}, {int((own_half <= target).sum())} of "
            f"{len(own_half)} met (every knob: {int((half <= target).sum())} of {len(half)})"
            + (
                f"; the widest, {worst.setting} on {worst.n_seeds} bracketed seeds, would need about "
                f"{need} bracketed seeds."
                if own_half.max() > target
                else "."
            )
        )
    return "\n".join(lines)


def _knob_top(points: pd.DataFrame) -> float:
    """The highest OOD-mean accuracy of ordinary training's knob curves."""
    return float(points[points.curve.str.startswith("ordinary")].y_mean.max())
