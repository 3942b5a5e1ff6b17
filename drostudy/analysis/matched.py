"""Robust settings against ordinary training matched on ID quality: is robustness more than regularisation?

A robust setting that gains OOD quality while losing ID quality may only have moved along the trade-off
that ordinary training's own regularisation knob (e.g. DPO's beta) already offers. Ordinary training is
run at several knob values ("ordinary", "ordinary beta 0.2", ...; the caller maps each such setting to
its knob value) with the robust settings' seeds. Per seed, its knob curve is the points (knob, x, y) with
x the matched quantity (default ID-mean accuracy) and y the outcome (default OOD-mean accuracy).

For a robust run with (x_r, y_r) on a seed, k* solves x(k*) = x_r piecewise-linearly in the knob along
that seed's curve (sorted by knob) and the matched baseline is y(k*), also piecewise-linear in the knob;
the per-seed difference is y_r - y(k*). The inversion needs x monotone in the knob: where it is not, x is
replaced by its isotonic (pool-adjacent-violators) fit, increasing or decreasing, whichever is closer in
squares (the `curve` column says which). Where the fit equals x_r (up to `tol`) at several knob
points, k* is the middle of that flat stretch. A robust x_r outside [min, max] of the (fitted) x on its
seed is not bracketed: that seed is left out, never extrapolated, and the diagnostics count it. The remaining seeds go through
`paired.paired_comparison` (t-interval, MDE), Holm over the robust settings of a stage, `paired.verdict`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from drostudy.analysis.monotone import invert, isotonic
from drostudy.analysis.paired import holm, paired_comparison, verdict
from drostudy.analysis.stats import COLUMNS, check_results

CURVE_COLUMNS = ("stage", "seed", "setting", "knob", "x", "x_fit", "y", "curve")
POINT_COLUMNS = (
    "stage",
    "setting",
    "seed",
    "x",
    "y",
    "knob_matched",
    "y_matched",
    "diff",
    "bracketed",
    "curve",
)
DIAGNOSTIC_COLUMNS = (
    "stage",
    "setting",
    "baseline",
    "n_seeds",
    "seeds_bracketed",
    "seeds_left_out",
    "left_out",
    "seeds_isotonic",
)


def knob_curve(
    results: pd.DataFrame,
    knobs: Mapping[str, float],
    baseline: str = "ordinary",
    match_on: tuple[str, str] = ("accuracy", "id"),
    outcome: tuple[str, str] = ("accuracy", "ood"),
    domain: str = "mean",
) -> pd.DataFrame:
    """Ordinary training's curve per (stage, seed), sorted by knob: CURVE_COLUMNS.

    knobs: setting -> knob value for every setting named `baseline` or starting with `baseline + " "`.
    x, y: the `match_on` and `outcome` (metric, split) values on `domain`; x_fit: x where it is monotone
    in the knob, else its isotonic fit; curve: "monotone" or "isotonic increasing"/"isotonic decreasing".
    """
    results = _check_inputs(results, knobs, baseline)
    rows = []
    for stage, block in results.groupby("stage", sort=True):
        block = block[block.setting.isin(list(knobs))]
        x, y = _values(block, match_on, domain), _values(block, outcome, domain)
        for setting in knobs:
            for name, table in (("match_on", x), ("outcome", y)):
                column = table[setting] if setting in table.columns else pd.Series(dtype=float)
                if column.empty or column.isna().any():
                    missing = sorted(column.index[column.isna()]) if len(column) else "all"
                    raise ValueError(
                        f"results: {name} of {setting!r} (stage {stage!r}) has no run for "
                        f"seeds {missing}; every knob setting needs every seed"
                    )
        order = sorted(knobs, key=knobs.get)
        for seed in x.index:
            xs, ys = x.loc[seed, order].to_numpy(float), y.loc[seed, order].to_numpy(float)
            steps = np.diff(xs)
            if (steps >= 0).all() or (steps <= 0).all():
                fit, curve = xs, "monotone"
            else:
                up, down = isotonic(xs, True), isotonic(xs, False)
                better_up = ((up - xs) ** 2).sum() <= ((down - xs) ** 2).sum()
                fit, curve = (up, "isotonic increasing") if better_up else (down, "isotonic decreasing")
            for setting, xv, fv, yv in zip(order, xs, fit, ys, strict=True):
                rows.append((stage, seed, setting, float(knobs[setting]), xv, fv, yv, curve))
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS))


def matched_points(
    results: pd.DataFrame,
    knobs: Mapping[str, float],
    baseline: str = "ordinary",
    match_on: tuple[str, str] = ("accuracy", "id"),
    outcome: tuple[str, str] = ("accuracy", "ood"),
    domain: str = "mean",
    tol: float = 1e-12,
) -> pd.DataFrame:
    """Every robust run matched on its seed's knob curve: POINT_COLUMNS.

    x, y: the robust run's match_on and outcome values; knob_matched: k* with x(k*) = x (NaN when not
    bracketed); y_matched: ordinary's outcome at k*; diff: y - y_matched; bracketed: x within the range
    of the curve's x_fit on that seed (up to `tol`); curve: the seed's curve kind (see `knob_curve`).
    Robust seeds without an ordinary curve are dropped with a warning.
    """
    curves = knob_curve(results, knobs, baseline, match_on, outcome, domain)
    robust = results[~results.setting.isin(list(knobs))]
    rows = []
    for stage, block in robust.groupby("stage", sort=True):
        x, y = _values(block, match_on, domain), _values(block, outcome, domain)
        stage_curves = {s: c for s, c in curves[curves.stage == stage].groupby("seed")}
        for setting in sorted(set(block.setting)):
            if setting not in x.columns or setting not in y.columns:
                raise ValueError(
                    f"results: {setting!r} (stage {stage!r}) lacks {match_on} or {outcome} "
                    f"rows on domain {domain!r}"
                )
            seeds = x[setting].dropna().index.intersection(y[setting].dropna().index)
            unpaired = sorted(set(seeds) - set(stage_curves))
            if unpaired:
                warnings.warn(
                    f"{setting!r} (stage {stage!r}): dropping seeds {unpaired}, which have no "
                    f"{baseline} knob curve",
                    stacklevel=2,
                )
            for seed in sorted(set(seeds) & set(stage_curves)):
                c = stage_curves[seed]
                xr, yr = float(x.loc[seed, setting]), float(y.loc[seed, setting])
                k = invert(c.knob.to_numpy(), c.x_fit.to_numpy(), xr, tol)
                ym = float(np.interp(k, c.knob, c.y)) if not math.isnan(k) else math.nan
                rows.append(
                    (stage, setting, seed, xr, yr, k, ym, yr - ym, not math.isnan(k), c.curve.iat[0])
                )
    return pd.DataFrame(rows, columns=list(POINT_COLUMNS))


def matched_comparisons(
    results: pd.DataFrame,
    knobs: Mapping[str, float],
    baseline: str = "ordinary",
    knob_name: str = "knob",
    match_on: tuple[str, str] = ("accuracy", "id"),
    outcome: tuple[str, str] = ("accuracy", "ood"),
    domain: str = "mean",
    lower_is_better: Iterable[str] = (),
    alpha: float = 0.05,
    power: float = 0.8,
) -> pd.DataFrame:
    """Each robust setting against ordinary matched on `match_on`, over its bracketed seeds: COLUMNS.

    baseline reads e.g. "ordinary matched on id accuracy (beta)"; split, metric: the outcome's; n_seeds:
    the bracketed seeds used; mean_diff, ci_low, ci_high, mde: `paired.paired_comparison` of the robust
    outcome and the matched one; verdict: `paired.verdict` on Holm's p-values over the robust settings of
    a stage. A setting with fewer than 2 bracketed seeds gets NaN numbers, "not resolved" and no place in
    the Holm family. `matched_diagnostics` gives the seeds left out.
    """
    points = matched_points(results, knobs, baseline, match_on, outcome, domain)
    name = _baseline_name(baseline, match_on, knob_name)
    return _comparisons(points, name, outcome, domain, lower_is_better, alpha, power)


def _comparisons(points, name, outcome, domain, lower_is_better=(), alpha=0.05, power=0.8):
    """matched_comparisons' rows from `matched_points`' table."""
    rows, tests = [], []
    for (stage, setting), block in points.groupby(["stage", "setting"], sort=True):
        used = block[block.bracketed].set_index("seed")
        row = dict(stage=stage, setting=setting, baseline=name, split=outcome[1], domain=domain)
        row |= dict(metric=outcome[0], n_seeds=len(used), verdict="not resolved")
        row |= dict.fromkeys(("mean_diff", "ci_low", "ci_high", "mde"), math.nan)
        if len(used) >= 2:
            c = paired_comparison(used.y, used.y_matched, 0.95, alpha, power)
            row |= dict(mean_diff=c.mean_diff, ci_low=c.ci_low, ci_high=c.ci_high, mde=c.mde)
            tests.append((len(rows), stage, c.p_value))
        else:
            warnings.warn(
                f"{setting!r} (stage {stage!r}): {len(used)} bracketed seeds, fewer than 2; "
                "no comparison",
                stacklevel=2,
            )
        rows.append(row)
    for stage in sorted({t[1] for t in tests}):
        family = [t for t in tests if t[1] == stage]
        for (i, _, _), p in zip(family, holm([t[2] for t in family]), strict=True):
            higher = outcome[0] not in set(lower_is_better)
            rows[i]["verdict"] = verdict(rows[i]["mean_diff"], p, alpha, higher)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def matched_diagnostics(
    results: pd.DataFrame,
    knobs: Mapping[str, float],
    baseline: str = "ordinary",
    knob_name: str = "knob",
    match_on: tuple[str, str] = ("accuracy", "id"),
    outcome: tuple[str, str] = ("accuracy", "ood"),
    domain: str = "mean",
) -> pd.DataFrame:
    """Per robust setting: DIAGNOSTIC_COLUMNS.

    n_seeds: robust seeds with an ordinary curve; seeds_bracketed: those used by `matched_comparisons`;
    seeds_left_out: those whose x lies outside the curve's range (left_out: their seeds, e.g. "[3, 4]");
    seeds_isotonic: seeds whose ordinary curve was not monotone in the knob and was fitted isotonically.
    """
    points = matched_points(results, knobs, baseline, match_on, outcome, domain)
    return _diagnostics(points, _baseline_name(baseline, match_on, knob_name))


def _diagnostics(points: pd.DataFrame, name: str) -> pd.DataFrame:
    """matched_diagnostics' rows from `matched_points`' table."""
    rows = []
    for (stage, setting), b in points.groupby(["stage", "setting"], sort=True):
        out = sorted(b.seed[~b.bracketed].tolist())
        rows.append(
            (
                stage,
                setting,
                name,
                len(b),
                int(b.bracketed.sum()),
                len(out),
                str(out),
                int((b.curve != "monotone").sum()),
            )
        )
    return pd.DataFrame(rows, columns=list(DIAGNOSTIC_COLUMNS))


def matched_by_knob(
    results: pd.DataFrame,
    curves: Mapping[str, Mapping[str, float]],
    matches: Iterable[tuple[str, str]] = (("accuracy", "id"),),
    outcome: tuple[str, str] = ("accuracy", "ood"),
    baseline: str = "ordinary",
    domain: str = "mean",
    lower_is_better: Iterable[str] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, diagnostics): `matched_comparisons` and `matched_diagnostics` of every robust setting
    along each knob of `curves` (knob name -> {setting: knob value}) on each of `matches` ((metric, split)
    pairs), knob outermost; each (knob, match) is its own Holm family with its own baseline name, e.g.
    "ordinary matched on id accuracy (steps)". Along one knob the other knobs' settings are left out: the
    robust settings (every setting not named `baseline` or `baseline + " ..."`) and that knob's curve."""
    if not curves:
        raise ValueError("curves must name at least one knob: {knob: {setting: knob value}}")
    on_any = set().union(*(set(c) for c in curves.values()))
    tables, notes = [], []
    for knob, curve in curves.items():
        others = on_any - set(curve)
        part = results[~results.setting.isin(list(others))]
        for match_on in matches:  # the points once, for the rows and for their diagnostics
            points = matched_points(part, curve, baseline, match_on, outcome, domain)
            name = _baseline_name(baseline, match_on, knob)
            tables.append(_comparisons(points, name, outcome, domain, lower_is_better))
            notes.append(_diagnostics(points, name))
    return pd.concat(tables, ignore_index=True), pd.concat(notes, ignore_index=True)


def _baseline_name(baseline: str, match_on: tuple[str, str], knob_name: str) -> str:
    return f"{baseline} matched on {match_on[1]} {match_on[0]} ({knob_name})"


def _values(block: pd.DataFrame, which: tuple[str, str], domain: str) -> pd.DataFrame:
    """seed x setting table of one (metric, split) on `domain`."""
    metric, split = which
    rows = block[(block.metric == metric) & (block.split == split) & (block.domain == domain)]
    return rows.pivot(index="seed", columns="setting", values="value")


def _check_inputs(results: pd.DataFrame, knobs: Mapping[str, float], baseline: str) -> pd.DataFrame:
    results = check_results(results, None, ())
    if not isinstance(knobs, Mapping) or len(knobs) < 2:
        raise ValueError(f"knobs must map at least 2 settings to knob values; got {knobs!r}")
    settings = set(results.setting)
    unknown = sorted(set(knobs) - settings)
    if unknown:
        raise ValueError(f"knobs names settings not in results: {unknown} (settings {sorted(settings)})")
    values = [knobs[s] for s in knobs]
    if not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise ValueError(f"knobs must map every setting to a finite knob value; got {dict(knobs)}")
    if len(set(values)) < len(values):
        raise ValueError(f"knobs must give distinct knob values; got {dict(knobs)}")
    unmapped = sorted(s for s in settings - set(knobs) if s == baseline or s.startswith(baseline + " "))
    if unmapped:
        raise ValueError(f"knobs has no knob value for the {baseline} settings {unmapped}")
    return results
