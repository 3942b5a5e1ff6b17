"""Notebook 06 (issue #25): does a robust setting's gain over ordinary training change with capacity?

Each stage runs its headline settings at several capacity points (reward models: trainable MiniLM blocks;
DPO: steps and LoRA depth; the RL testbed: policy features and steps) on the same paired seeds. A capacity
point is part of the `stage` column, `"<stage> · <capacity>"` (e.g. "rm A · 1 trainable block"), so that
`stats.comparisons_table` compares every setting with ordinary training *at the same capacity*. This module
reads those rows back per capacity: the paired OOD-mean gains in capacity order (`gains`), one figure with
a panel per stage (`gains_figure`) and one sentence per stage (`stage_sentence`).

The whole notebook takes longer than a working session on 2 cores, so it can run a stage at a time
(`STAGES`): `merge_stages` keeps an earlier run's rows of the stages left out (`previous_run`, same mode),
whole, and replaces those of the stages that ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from plotly.subplots import make_subplots

from drostudy.analysis import stats
from drostudy.analysis.records import read_record
from drostudy.plotting import TEMPLATE, add_gain_line, color_map

SEP = " · "  # between a stage and its capacity point in the `stage` column
# notebook 06's STAGES names -> the first word of their rows' `stage` ("rm A · 1 trainable block")
STAGE_WORDS = {"reward": "rm", "dpo": "dpo", "testbed": "rl_testbed"}
GAIN_COLUMNS = (
    "stage",
    "capacity",
    "setting",
    "metric",
    "n_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "half_width",
    "mde",
    "verdict",
)


def capacity_stage(stage: str, capacity: str) -> str:
    """The `stage` column of a run of `stage` at capacity point `capacity`."""
    if not stage or not capacity or SEP in stage or SEP in capacity:
        raise ValueError(
            f"stage and capacity must be non-empty without {SEP!r}; got {stage!r}, {capacity!r}"
        )
    return f"{stage}{SEP}{capacity}"


def split_stage(stage: str) -> tuple[str, str]:
    """(stage, capacity) of a `capacity_stage` value; ValueError naming it if it has no capacity."""
    base, sep, capacity = stage.partition(SEP)
    if not sep:
        raise ValueError(f"stage {stage!r} names no capacity point (expected 'stage{SEP}capacity')")
    return base, capacity


def gains(comparisons: pd.DataFrame, order: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """The OOD-mean rows of the quality metric (stats.QUALITY_METRICS) of `comparisons` (stats.COLUMNS,
    stages from `capacity_stage`, baseline "ordinary"), one per stage, capacity and setting: GAIN_COLUMNS,
    sorted by stage, then capacity in `order` ({stage: [capacity, ...]}, the plan's order; default: the
    order of the rows, which comparisons_table sorts by name), then setting."""
    rows = comparisons[
        (comparisons.baseline == "ordinary")
        & (comparisons.split == "ood")
        & (comparisons.domain == "mean")
        & comparisons.metric.isin(stats.QUALITY_METRICS)
    ].copy()
    parts = [split_stage(s) for s in rows.stage]
    rows["stage"], rows["capacity"] = [p[0] for p in parts], [p[1] for p in parts]
    rows["half_width"] = stats.half_width(rows)
    seen = order or {}
    rank = {
        (stage, capacity): seen.get(
            stage, list(dict.fromkeys(rows.capacity[rows.stage == stage]))
        ).index(capacity)
        for stage, capacity in zip(rows.stage, rows.capacity, strict=True)
    }
    rows["rank"] = [rank[(s, c)] for s, c in zip(rows.stage, rows.capacity, strict=True)]
    rows = rows.sort_values(["stage", "rank", "setting"], kind="stable")
    return rows[list(GAIN_COLUMNS)].reset_index(drop=True)


def gains_figure(table: pd.DataFrame, titles: dict[str, str] | None = None):
    """One panel per stage: each setting's paired OOD-mean gain over ordinary (95% interval) against the
    capacity points, in `gains` order, with the zero line; `titles` names the panels ({stage: title})."""
    stages = list(dict.fromkeys(table.stage))
    titles = titles or {}
    fig = make_subplots(
        rows=1, cols=len(stages), subplot_titles=[titles.get(s, s) for s in stages], shared_yaxes=False
    )
    colors = color_map(sorted(set(table.setting)))
    for col, stage in enumerate(stages, 1):
        part = table[table.stage == stage]
        for setting, line in part.groupby("setting", sort=True):
            add_gain_line(
                fig,
                line,
                "capacity",
                setting,
                colors[setting],
                row=1,
                col=col,
                legendgroup=setting,
                showlegend=col == 1,
            )
        fig.add_hline(y=0, line=dict(color="grey", dash="dot"), row=1, col=col)
        fig.update_xaxes(type="category", title_text="capacity", row=1, col=col)
    fig.update_yaxes(title_text="OOD-mean gain over ordinary (paired 95%)", row=1, col=1)
    fig.update_layout(
        template=TEMPLATE,
        title="Robust minus ordinary out of distribution, at each capacity<br><sup>paired over seeds; "
        "each point against ordinary training at the same capacity</sup>",
        width=max(520, 420 * len(stages)),
        height=460,
    )
    return fig


def stage_sentence(table: pd.DataFrame, stage: str, setting: str, target: float) -> str:
    """What `setting`'s gain does along `stage`'s capacity points (`gains` rows): the gain and interval at
    each point, whether its sign changes among the resolved points, and each half-width against `target`."""
    part = table[(table.stage == stage) & (table.setting == setting)]
    if part.empty:
        raise ValueError(f"no gains of setting {setting!r} in stage {stage!r}")
    points = "; ".join(
        f"{r.capacity}: {r.mean_diff:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}] ({r.verdict}, n={r.n_seeds})"
        for r in part.itertuples()
    )
    resolved = set(part.verdict[part.verdict != "not resolved"])
    if len(resolved) > 1:
        change = "the verdict changes sign with capacity"
    elif resolved:
        change = f"{resolved.pop()} wherever resolved; the sign does not change"
    else:
        change = "resolved at no capacity point"
    wide = part.capacity[part.half_width > target].tolist()
    met = (
        f"half-widths <= {target} at every point" if not wide else f"half-width above {target} at {wide}"
    )
    return f"{stage}, {setting} minus ordinary, OOD mean: {points}; {change}; {met}."


def notebook_stage(stage: str) -> str:
    """The notebook-06 stage (a key of STAGE_WORDS) of a `stage` column value; ValueError if none."""
    word = split_stage(stage)[0].split()[0]
    found = [name for name, w in STAGE_WORDS.items() if w == word]
    if not found:
        raise ValueError(f"stage {stage!r} belongs to none of {sorted(STAGE_WORDS)}")
    return found[0]


def previous_run(path: str | Path, mode: str) -> dict:
    """The record an earlier run of notebook 06 left at `path` in the same `mode` ({} when there is none,
    or it was made in another mode): the stages this run leaves out are carried over from it."""
    path = Path(path)
    if not path.exists():
        return {}
    record = read_record(path)
    return record if record.get("parameters", {}).get("MODE") == mode else {}


def previous_comparisons(path: str | Path, previous: dict) -> pd.DataFrame:
    """The comparison rows (stats.COLUMNS) the earlier run `previous` (previous_run) wrote to `path`, its
    comparisons CSV; none when there is no earlier run in this mode. The record does not repeat them."""
    path = Path(path)
    if not previous or not path.exists():
        return pd.DataFrame(columns=list(stats.COLUMNS))
    table = pd.read_csv(path)
    if tuple(table.columns) != stats.COLUMNS:
        raise ValueError(
            f"{path} must have the columns {list(stats.COLUMNS)}; got {list(table.columns)}"
        )
    return table


def kl_sentence(travelled: pd.DataFrame) -> str:
    """DPO's KL to the reference out of distribution per capacity point and setting, from the rows of
    drostudy.capacity.dpo.kl_travelled (in their order); "" without rows."""
    by_point: dict[str, list[str]] = {}
    for row in travelled.itertuples():
        by_point.setdefault(split_stage(row.stage)[1], []).append(f"{row.setting} {row.kl_ood:.3f}")
    points = "; ".join(f"{point}: {', '.join(kl)}" for point, kl in by_point.items())
    return (
        f"DPO's KL to the reference out of distribution (nats per response, seed mean): {points}."
        if points
        else ""
    )


def run_seconds(runs: Iterable[dict]) -> float:
    """Seconds the runs took as each was trained (their `timings.total_s`, drostudy.runs): a stage's cost
    whether this execution trained them or resumed them from finished runs."""
    return float(sum(run.get("timings", {}).get("total_s", 0.0) for run in runs))


def merge_stages(new: pd.DataFrame, previous: pd.DataFrame, ran: Iterable[str]) -> pd.DataFrame:
    """Comparison rows (stats.COLUMNS) of the stages that `ran` (every row of `new`), then `previous`'s rows
    of every other stage: a stage's rows always come whole from one run, never mixed."""
    ran = set(ran)
    unknown = sorted(ran - set(STAGE_WORDS))
    if unknown:
        raise ValueError(f"ran: unknown stages {unknown}; expected some of {sorted(STAGE_WORDS)}")
    strays = sorted({s for s in new.stage if notebook_stage(s) not in ran})
    if strays:
        raise ValueError(f"new: rows of stages that did not run: {strays} (ran {sorted(ran)})")
    kept = (
        previous[[notebook_stage(s) not in ran for s in previous.stage]] if len(previous) else previous
    )
    parts = [p for p in (new, kept) if len(p)]
    if not parts:
        raise ValueError("no comparison rows: no stage ran and no earlier run left any")
    return pd.concat(parts, ignore_index=True)[list(stats.COLUMNS)]
