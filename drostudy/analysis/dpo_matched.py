"""Notebook 03's matched comparison (issue #24): each robust setting against ordinary DPO moved along its
own knobs, `beta` and the number of steps, to the robust run's ID accuracy or to its KL to the reference,
on the same seed.

Ordinary DPO runs at several betas and step counts with the robust settings' seeds ("ordinary" at the
notebook's BETA and steps, "ordinary beta 1.6", "ordinary steps 3", ...); `curves` maps each knob to its
settings and their values (drostudy.dpo.study.knob_curves). The knob settings stay out of the plain
comparison family (`plain_results`), so the rows against plain ordinary DPO and their Holm corrections
are those of a study without them. `matched` gives, per knob, two families, each Holm-corrected over the
robust settings (drostudy.analysis.matched): OOD-mean accuracy matched on ID-mean accuracy, and matched
on the OOD-mean KL to the reference (the drift a practitioner budgets). `frontier_curves`,
`frontier_figures` and `frontier_sentence` draw and read the frontiers (drostudy.analysis.frontier).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from drostudy.analysis import matched as matched_lib
from drostudy.analysis import stats

OUTCOME = ("accuracy", "ood")  # OOD-mean implicit-reward preference accuracy
MATCH_ON = {"id accuracy": ("accuracy", "id"), "kl": ("kl", "ood")}  # what ordinary DPO is matched on

Curves = Mapping[str, Mapping[str, float]]  # knob -> {setting: knob value}


def knob_settings(curves: Curves) -> set[str]:
    """Every setting that moves ordinary DPO along a knob (plain `ordinary` excluded)."""
    return set().union(*(set(c) for c in curves.values())) - {"ordinary"} if curves else set()


def plain_results(results: pd.DataFrame, curves: Curves) -> pd.DataFrame:
    """`results` (drostudy.analysis.stats' long table) without ordinary DPO's knob settings: the plain
    comparison family (ordinary vs each method), as it was before the knob runs existed."""
    return results[~results["setting"].isin(knob_settings(curves))].reset_index(drop=True)


def matched(results: pd.DataFrame, curves: Curves) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, diagnostics): comparison rows (stats.COLUMNS) of every robust setting against ordinary DPO
    matched along each knob on ID-mean accuracy and on OOD-mean KL (baseline e.g. "ordinary matched on
    id accuracy (steps)"), and per row the seeds bracketed and left out (matched.DIAGNOSTIC_COLUMNS)."""
    rows, diagnosed = matched_lib.matched_by_knob(
        results, curves, matches=MATCH_ON.values(), outcome=OUTCOME
    )
    return rows[list(stats.COLUMNS)], diagnosed


def baseline_name(match: str, knob: str) -> str:
    """The `baseline` column of the rows matched on `match` (a key of MATCH_ON) along `knob`."""
    return matched_lib._baseline_name("ordinary", MATCH_ON[match], knob)


def matched_conclusion(
    rows: pd.DataFrame, diagnosed: pd.DataFrame, primary: str, primary_baseline: str, target: float
) -> str:
    """Sentences from `matched`: the matched primary (`primary` against `primary_baseline`, named before the
    run) with its half-width against `target`, then every robust setting against every matched baseline."""
    lines = []
    diag = diagnosed.set_index(["baseline", "setting"])
    for _, r in rows.iterrows():
        setting, name = r["setting"], r["baseline"]
        d = diag.loc[(name, setting)]
        bracket = f"{d['seeds_bracketed']} of {d['n_seeds']} seeds bracketed"
        if pd.isna(r["mean_diff"]):
            numbers, half = "no comparison", float("nan")
        else:
            half = (r["ci_high"] - r["ci_low"]) / 2
            numbers = (
                f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] (half-width "
                f"{half:.4f}), {r['verdict']}{stats.fragility_note(r['ci_low'], r['ci_high'])}"
            )
        if setting == primary and name == primary_baseline:
            met = "met" if not pd.isna(half) and half <= target else "NOT met"
            lines.insert(
                0,
                f"Matched primary: {setting} - {name}, OOD-mean preference accuracy: {numbers}; "
                f"target <= {target}: {met}; {bracket}.",
            )
        lines.append(f"- {setting} vs {name}: {numbers}; {bracket}.")
    if not lines or not lines[0].startswith("Matched primary"):
        lines.insert(
            0, f"Matched primary: {primary} - {primary_baseline}: not run (no such knob curve)."
        )
    return "\n".join(lines)


def kl_sentence(table: pd.DataFrame, curves: Curves, primary: str) -> str:
    """Does `primary`'s KL saving survive ordinary DPO's knobs? Its OOD-mean accuracy and KL beside ordinary
    DPO's at every knob setting, from `dpo_study.summary(...)` (columns label, domain, metric, mean)."""
    ood = table[table["domain"] == "OOD mean"].pivot(index="label", columns="metric", values="mean")
    ordinary = ["ordinary", *sorted(knob_settings(curves))]
    points = [(s, ood.loc[s, "accuracy"], ood.loc[s, "kl"]) for s in ordinary if s in ood.index]
    listed = "; ".join(f"{s}: {a:.3f} at KL {k:.3f}" for s, a, k in points)
    acc, kl = ood.loc[primary, "accuracy"], ood.loc[primary, "kl"]
    cheaper = [s for s, _, k in points if k <= kl]
    as_good = [s for s, a, k in points if k <= kl and a >= acc]
    reach = (
        f"ordinary DPO reaches {primary}'s KL as {', '.join(cheaper)}"
        f" and its OOD accuracy there too as {', '.join(as_good) or 'none'}"
        if cheaper
        else f"no knob setting brings ordinary DPO down to {primary}'s KL"
    )
    return (
        f"- KL saving: {primary} reaches OOD-mean accuracy {acc:.3f} at KL {kl:.3f}; {listed}; {reach}."
    )


def frontier_curves(curves: Curves, settings, peer_knobs: Mapping[str, float]) -> dict:
    """The frontier's curves (drostudy.analysis.frontier): ordinary DPO's curve along each knob ("ordinary
    (beta)", "ordinary (steps)"), each ball's radius curve from ordinary (radius 0) through its settings
    (`tv 0.2` -> radius 0.2), and each peer as a point labelled with its own knob (`peer_knobs`: e.g.
    {"dr_dpo": REG, "wdpo": WDPO_RADIUS})."""
    out = {f"ordinary ({knob})": dict(curve) for knob, curve in curves.items()}
    on_a_curve = knob_settings(curves) | {"ordinary"}
    robust = [s for s in dict.fromkeys(settings) if s not in on_a_curve]
    balls: dict[str, dict[str, float]] = {}
    for setting in robust:
        words = setting.split()
        if len(words) == 2 and setting not in peer_knobs:
            balls.setdefault(f"{words[0]} (radius)", {"ordinary": 0.0})[setting] = float(words[1])
        else:
            out[setting] = {setting: float(peer_knobs.get(setting, 0.0))}
    return out | balls


def frontier_figures(results: pd.DataFrame, curve_map: Mapping[str, Mapping[str, float]]) -> dict:
    """{"id_ood": (points, figure), "kl_ood": (points, figure)}: ID-mean vs OOD-mean accuracy, and OOD-mean
    KL vs OOD-mean accuracy, each point with its paired 95% interval to plain ordinary DPO."""
    from drostudy.analysis import frontier

    axes = {
        "id_ood": (("accuracy", "id"), "ID-mean preference accuracy", "ID vs OOD accuracy"),
        "kl_ood": (("kl", "ood"), "OOD-mean KL to the reference (nats)", "KL vs OOD accuracy"),
    }
    out = {}
    for name, (x, x_title, what) in axes.items():
        points = frontier.frontier_points(results, curve_map, x=x, y=OUTCOME, domain="mean")
        title = (
            f"DPO: {what}, ordinary's knob curves against the robust settings"
            "<br><sup>means over seeds; bars: paired 95% intervals to plain ordinary DPO</sup>"
        )
        out[name] = (
            points,
            frontier.frontier_figure(points, x_title, "OOD-mean preference accuracy", title),
        )
    return out


def frontier_sentence(points: pd.DataFrame, primary: str, knob: str) -> str:
    """Where `primary` lies against ordinary's curve along `knob` on a frontier (`frontier_figures` points):
    the curve's OOD accuracy interpolated at its x (within the curve's x range), else that it is outside."""
    line = points[points["curve"] == f"ordinary ({knob})"].sort_values("x_mean")
    row = points[points["setting"] == primary].iloc[0]
    lo, hi = line["x_mean"].min(), line["x_mean"].max()
    if not lo <= row["x_mean"] <= hi:
        return (
            f"{primary} (x {row['x_mean']:.3f}) lies outside ordinary's {knob} curve "
            f"(x {lo:.3f} to {hi:.3f}): not bracketed on the means"
        )
    curve_y = float(np.interp(row["x_mean"], line["x_mean"], line["y_mean"]))
    side = "above" if row["y_mean"] > curve_y else "below"
    return (
        f"{primary} at x {row['x_mean']:.3f} has OOD accuracy {row['y_mean']:.3f}, {side} ordinary's {knob} "
        f"curve there ({curve_y:.3f}, linear between its means)"
    )
