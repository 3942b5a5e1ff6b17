"""Notebook 03's matched comparison (issue #24): each robust setting against ordinary DPO moved along its
own knob, `beta`, to the robust run's ID accuracy or to its KL to the reference, on the same seed.

Ordinary DPO runs at several betas with the robust settings' seeds ("ordinary" at the notebook's
BETA, "ordinary beta 0.4", ...; `knobs` maps each to its beta). The knob settings stay out of the plain
comparison family (`plain_results`), so the rows against plain ordinary DPO and their Holm corrections
are those of a study without them. `matched_rows` appends two families, each Holm-corrected over the
robust settings (drostudy.analysis.matched): OOD-mean accuracy matched on ID-mean accuracy, and matched
on the OOD-mean KL to the reference (the drift a practitioner budgets). `curves`, `frontier_figures` and
`frontier_sentence` draw and read the frontiers (drostudy.analysis.frontier).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from drostudy.analysis import matched, stats

OUTCOME = ("accuracy", "ood")  # OOD-mean implicit-reward preference accuracy
MATCH_ON = {"id accuracy": ("accuracy", "id"), "kl": ("kl", "ood")}  # what ordinary DPO is matched on
KNOB = "beta"


def plain_results(results: pd.DataFrame, knobs: Mapping[str, float]) -> pd.DataFrame:
    """`results` (drostudy.analysis.stats' long table) without ordinary DPO's knob settings: the plain
    comparison family (ordinary vs each method), as it was before the knob runs existed."""
    knob_settings = set(knobs) - {"ordinary"}
    return results[~results["setting"].isin(knob_settings)].reset_index(drop=True)


def matched_rows(results: pd.DataFrame, knobs: Mapping[str, float]) -> pd.DataFrame:
    """Comparison rows (stats.COLUMNS) of every robust setting against ordinary DPO matched along beta, on
    ID-mean accuracy and on OOD-mean KL; baseline e.g. "ordinary matched on id accuracy (beta)"."""
    frames = [
        matched.matched_comparisons(
            results, knobs, knob_name=KNOB, match_on=on, outcome=OUTCOME, domain="mean"
        )
        for on in MATCH_ON.values()
    ]
    return pd.concat(frames, ignore_index=True)[list(stats.COLUMNS)]


def diagnostics(results: pd.DataFrame, knobs: Mapping[str, float]) -> pd.DataFrame:
    """matched.matched_diagnostics of both matchings, one after the other: seeds bracketed, left out."""
    frames = [
        matched.matched_diagnostics(
            results, knobs, knob_name=KNOB, match_on=on, outcome=OUTCOME, domain="mean"
        )
        for on in MATCH_ON.values()
    ]
    return pd.concat(frames, ignore_index=True)


def baseline_name(match: str) -> str:
    """The `baseline` column of the rows matched on `match` (a key of MATCH_ON)."""
    return matched._baseline_name("ordinary", MATCH_ON[match], KNOB)


def matched_conclusion(rows: pd.DataFrame, diagnosed: pd.DataFrame, primary: str, target: float) -> str:
    """Sentences from `matched_rows` and `diagnostics`: the matched primary (`primary` matched on ID
    accuracy) with its half-width against `target`, then every robust setting on both matchings."""
    lines = []
    for match in MATCH_ON:
        name = baseline_name(match)
        part = rows[rows["baseline"] == name].set_index("setting")
        diag = diagnosed[diagnosed["baseline"] == name].set_index("setting")
        for setting, r in part.iterrows():
            d = diag.loc[setting]
            bracket = f"{d['seeds_bracketed']} of {d['n_seeds']} seeds bracketed"
            if pd.isna(r["mean_diff"]):
                numbers = "no comparison"
            else:
                half = (r["ci_high"] - r["ci_low"]) / 2
                numbers = (
                    f"{r['mean_diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] (half-width "
                    f"{half:.4f}), {r['verdict']}{stats.fragility_note(r['ci_low'], r['ci_high'])}"
                )
            if setting == primary and match == "id accuracy":
                met = "met" if not pd.isna(r["mean_diff"]) and half <= target else "NOT met"
                lines.insert(
                    0,
                    f"Matched primary: {setting} - {name}, OOD-mean preference accuracy: {numbers}; "
                    f"target <= {target}: {met}; {bracket}.",
                )
            lines.append(f"- {setting} vs {name}: {numbers}; {bracket}.")
    return "\n".join(lines)


def kl_sentence(table: pd.DataFrame, knobs: Mapping[str, float], primary: str) -> str:
    """Does `primary`'s KL saving survive a larger beta? Its OOD-mean accuracy and KL beside ordinary DPO's
    at every beta, from `dpo_study.summary(...)` (columns label, domain, metric, mean)."""
    ood = table[table["domain"] == "OOD mean"].pivot(index="label", columns="metric", values="mean")
    points = [(knobs[s], ood.loc[s, "accuracy"], ood.loc[s, "kl"]) for s in knobs if s in ood.index]
    ordinary = "; ".join(f"beta {b:g}: {a:.3f} at KL {k:.3f}" for b, a, k in sorted(points))
    acc, kl = ood.loc[primary, "accuracy"], ood.loc[primary, "kl"]
    cheaper = [b for b, _, k in points if k <= kl]
    as_good = [b for b, a, k in points if k <= kl and a >= acc]
    reach = (
        f"ordinary DPO reaches {primary}'s KL at beta {', '.join(f'{b:g}' for b in sorted(cheaper))}"
        f" and its OOD accuracy there too at {', '.join(f'{b:g}' for b in sorted(as_good)) or 'none'}"
        if cheaper
        else f"no beta in the grid brings ordinary DPO down to {primary}'s KL"
    )
    return (
        f"- KL saving: {primary} reaches OOD-mean accuracy {acc:.3f} at KL {kl:.3f}; ordinary DPO "
        f"{ordinary}; {reach}."
    )


def curves(knobs: Mapping[str, float], settings, peer_knobs: Mapping[str, float]) -> dict:
    """The frontier's curves (drostudy.analysis.frontier): ordinary DPO's beta curve, each ball's radius
    curve from ordinary (radius 0) through its settings (`tv 0.2` -> radius 0.2), and each peer as a point
    labelled with its own knob (`peer_knobs`: e.g. {"dr_dpo": REG, "wdpo": WDPO_RADIUS})."""
    out = {f"ordinary ({KNOB})": dict(knobs)}
    robust = [s for s in dict.fromkeys(settings) if s not in knobs]
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
            f"DPO: {what}, ordinary's beta curve against the robust settings"
            "<br><sup>means over seeds; bars: paired 95% intervals to plain ordinary DPO</sup>"
        )
        out[name] = (
            points,
            frontier.frontier_figure(points, x_title, "OOD-mean preference accuracy", title),
        )
    return out


def frontier_sentence(points: pd.DataFrame, primary: str) -> str:
    """Where `primary` lies against ordinary's beta curve on a frontier (`frontier_figures` points): the
    curve's OOD accuracy interpolated at its x (within the curve's x range), else that it is outside."""
    line = points[points["curve"] == f"ordinary ({KNOB})"].sort_values("x_mean")
    row = points[points["setting"] == primary].iloc[0]
    lo, hi = line["x_mean"].min(), line["x_mean"].max()
    if not lo <= row["x_mean"] <= hi:
        return (
            f"{primary} (x {row['x_mean']:.3f}) lies outside ordinary's beta curve "
            f"(x {lo:.3f} to {hi:.3f}): not bracketed on the means"
        )
    curve_y = float(np.interp(row["x_mean"], line["x_mean"], line["y_mean"]))
    side = "above" if row["y_mean"] > curve_y else "below"
    return (
        f"{primary} at x {row['x_mean']:.3f} has OOD accuracy {row['y_mean']:.3f}, {side} ordinary's beta "
        f"curve there ({curve_y:.3f}, linear between its means)"
    )
