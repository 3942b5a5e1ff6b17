"""Notebook 04's testbed against ordinary training moved along its KL coefficient beta (issue #24): the
matched comparisons (drostudy.analysis.matched), their diagnostics and sentences, the frontier figures
(drostudy.analysis.frontier), and where runs end below the untrained reference policy out of distribution.

`knobs` is ordinary's curve {setting: beta} ("ordinary": the default beta, "ordinary beta 0.4", ...); the
robust settings are every other trained setting (the "reference" policy is left out of every table here).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from drostudy.analysis.frontier import frontier_figure, frontier_points
from drostudy.analysis.matched import matched_by_knob
from drostudy.analysis.paired import paired_comparison
from drostudy.analysis.stats import half_width

BASELINE = "ordinary"
STAGE = "rl_testbed"
REFERENCE = "reference"  # the untrained policy pi_ref (theta = 0)
OUTCOME = ("correct", "ood")  # OOD-mean expected correctness, the primary's outcome
# (metric, split) each robust run is matched on: its ID-mean correctness, and its drift (KL to pi_ref on
# the held-out prompts, the budget a practitioner sets)
MATCHES = (("correct", "id"), ("kl", "ood"))
KNOB = "beta"


def _trained(results: pd.DataFrame) -> pd.DataFrame:
    return results[results.setting != REFERENCE]


def matched(results: pd.DataFrame, knobs: Mapping[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, diagnostics): the matched comparisons (COLUMNS) of every robust setting on the OOD-mean
    correctness, once per MATCHES entry, each with its own `baseline` ("ordinary matched on id correct
    (beta)", ...) and its own Holm family; and per row the seeds ordinary's beta curve brackets and those
    left out, not extrapolated (drostudy.analysis.matched.matched_by_knob)."""
    return matched_by_knob(_trained(results), {KNOB: knobs}, MATCHES, OUTCOME, BASELINE)


def _row(table: pd.DataFrame, setting: str, baseline: str):
    hit = table[
        (table.stage == STAGE)
        & (table.setting == setting)
        & (table.baseline == baseline)
        & (table.split == OUTCOME[1])
        & (table.domain == "mean")
        & (table.metric == OUTCOME[0])
    ]
    if len(hit) != 1:
        raise ValueError(
            f"no single OOD-mean correct row of {setting!r} vs {baseline!r}; got {len(hit)}"
        )
    return hit.iloc[0]


def _interval(row) -> str:
    return f"{row.mean_diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]"


def gains_table(plain: pd.DataFrame, matched: pd.DataFrame) -> pd.DataFrame:
    """One row per robust setting: its plain gain over `ordinary` and its gains over ordinary matched on
    each MATCHES entry (OOD-mean correctness; interval, half-width, bracketed seeds, Holm verdict)."""
    table = {}
    for setting in sorted(set(matched.setting)):
        cells = {}
        for baseline in [BASELINE, *sorted(set(matched.baseline))]:
            source = plain if baseline == BASELINE else matched
            row = _row(source, setting, baseline)
            cells[f"vs {baseline}"] = (
                f"{_interval(row)} ± {half_width(row):.4f}, {row.n_seeds} seeds ({row.verdict})"
            )
        table[setting] = cells
    return pd.DataFrame.from_dict(table, orient="index").rename_axis("OOD-mean correct, setting - ...")


def matched_text(
    plain: pd.DataFrame, matched: pd.DataFrame, setting: str, seeds: int, target: float
) -> tuple[str, bool]:
    """The matched primary's sentence (`setting` vs ordinary matched on its ID-mean correctness along beta,
    beside its plain gain) and whether its half-width is <= `target`."""
    name = f"{BASELINE} matched on {MATCHES[0][1]} {MATCHES[0][0]} ({KNOB})"
    row, base = _row(matched, setting, name), _row(plain, setting, BASELINE)
    met = bool(half_width(row) <= target)
    survives = "survives" if row.ci_low > 0 else "does not survive (interval reaches 0 or below)"
    text = (
        f"Matched primary (testbed): {setting} vs {name}, OOD-mean expected correctness: "
        f"{_interval(row)} over {row.n_seeds} of {seeds} seeds bracketed ({row.verdict}; half-width "
        f"{half_width(row):.4f}, MDE {row.mde:.4f}; target <= {target}: {'met' if met else 'NOT met'}); "
        f"plain gain {_interval(base)}. The gain {survives} the matched comparison."
    )
    return text, met


def below_reference_sentence(results: pd.DataFrame, settings: list[str]) -> str:
    """Which of `settings` end below the untrained reference policy's OOD-mean correctness (paired 95%
    interval of setting - reference entirely below 0): the learned reward over-optimised."""
    ood = results[(results.split == "ood") & (results.domain == "mean") & (results.metric == "correct")]
    wide = ood.pivot(index="seed", columns="setting", values="value")
    below, parts = [], []
    for setting in settings:
        c = paired_comparison(wide[setting], wide[REFERENCE])
        parts.append(f"{setting} {c.mean_diff:+.4f}")
        if c.ci_high < 0:
            below.append(setting)
    reference = wide[REFERENCE].mean()
    said = ", ".join(below) if below else "none"
    return (
        f"Below the reference policy (OOD-mean correctness {reference:.4f}, untrained): {said} "
        f"(paired interval entirely below 0; setting - reference: {'; '.join(parts)}). Where a setting "
        "ends below it, training on the learned reward lost graded correctness out of distribution: the "
        "reward is over-optimised, and a gain over ordinary there is a smaller loss, not an improvement."
    )


def frontiers(results: pd.DataFrame, lines: Mapping[str, Mapping[str, float]]) -> dict:
    """The two frontier figures of the testbed: {"id_ood": ID vs OOD correctness, "kl_ood": OOD correctness
    vs OOD KL to the reference}, one line per curve of `lines` (`curves`), each point with its paired
    interval to ordinary; and their frontier_points under "id_ood_points" and "kl_ood_points"."""
    trained = _trained(results)
    axes = {
        "id_ood": (("correct", "id"), "ID-mean expected correctness"),
        "kl_ood": (("kl", "ood"), "OOD-mean KL to the reference (nats)"),
    }
    figures = {}
    for key, (x, x_title) in axes.items():
        points = frontier_points(trained, lines, x=x, y=OUTCOME, domain="mean", baseline=BASELINE)
        figures[key] = frontier_figure(
            points,
            x_title,
            "OOD-mean expected correctness",
            f"testbed frontier: {x_title} vs OOD correctness (paired 95% intervals to ordinary)",
        )
        figures[key + "_points"] = points
    return figures


def curves(knobs: Mapping[str, float], settings) -> dict[str, dict[str, float]]:
    """The frontier's curves: ordinary's beta curve (`knobs`) and one radius curve per divergence of the
    `settings` (objects with name, divergence, radius: the testbed plan's), each from plain ordinary at
    radius 0."""
    found = {"ordinary (beta)": dict(knobs)}
    for s in settings:
        if s.radius and s.name not in knobs:
            found.setdefault(f"{s.divergence} (radius)", {BASELINE: 0.0})[s.name] = float(s.radius)
    return found


def frontier_sentence(points: pd.DataFrame, knob_curve: str = "ordinary (beta)") -> str:
    """Per robust point of `points` (frontier_points): above or below ordinary's beta curve at its own x
    (ordinary's mean y linearly interpolated in its mean x; "outside" beyond the curve's x range), by how
    much."""
    ordinary = points[points.curve == knob_curve].sort_values("x_mean")
    robust = points[(points.curve != knob_curve) & (points.setting != BASELINE)]
    parts = []
    for _, p in robust.drop_duplicates("setting").iterrows():
        if not ordinary.x_mean.min() <= p.x_mean <= ordinary.x_mean.max():
            parts.append(f"{p.setting} outside ordinary's range")
            continue
        level = float(np.interp(p.x_mean, ordinary.x_mean, ordinary.y_mean))
        parts.append(f"{p.setting} {'above' if p.y_mean > level else 'below'} ({p.y_mean - level:+.4f})")
    return "; ".join(parts)
