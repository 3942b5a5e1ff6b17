"""Notebook 05's narrative from the records of notebooks 02-04: each notebook's primary comparison (read from
its own record, whatever its labels), notebook 02's robustness curves around its primary split, and the
findings in Markdown."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.express as px

from drostudy.analysis import findings, matched_findings, reward_grid, robustness
from drostudy.analysis.records import record_files
from drostudy.analysis.stats import QUALITY_METRICS

PRIMARY_COLUMNS = ("notebook", "stage", "setting")
CURVE_RADII = (0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.0)


def recorded_primary(record: dict) -> tuple[str, str] | None:
    """(stage, setting) of the primary comparison a notebook's record names: `primary` as [stage, setting]
    (notebook 02) or as a comparisons row {stage, setting, ...} (notebook 04); None when it names none."""
    primary = record.get("primary")
    if isinstance(primary, dict) and {"stage", "setting"} <= primary.keys():
        return primary["stage"], primary["setting"]
    if isinstance(primary, (list, tuple)) and len(primary) == 2:
        return tuple(primary)
    return None


def primaries(results: str | Path) -> pd.DataFrame:
    """(notebook, stage, setting) of every record results/NN_*.json that names its primary comparison."""
    rows = []
    for path in record_files(results, "[0-9][0-9]_*.json"):
        primary = recorded_primary(json.loads(path.read_text()))
        if primary is not None:
            rows.append(dict(zip(PRIMARY_COLUMNS, (path.name[:2], *primary), strict=True)))
    return pd.DataFrame(rows, columns=list(PRIMARY_COLUMNS))


def primary_table(paired: pd.DataFrame, named: pd.DataFrame) -> pd.DataFrame:
    """The plain OOD-mean row (against ordinary) in each stage's quality metric (stats.QUALITY_METRICS) of
    every named primary comparison, from the pooled comparisons tables (`findings.load_comparisons`); NaN
    where the notebook's comparisons table is missing."""
    if "notebook" not in paired:  # no comparisons table found
        paired = paired.assign(notebook=pd.Series(dtype=str))
    quality = paired[
        (paired.split == "ood")
        & (paired.domain == "mean")
        & paired.metric.isin(QUALITY_METRICS)
        & matched_findings.is_plain(paired)
    ]
    return named.merge(quality, on=list(PRIMARY_COLUMNS), how="left")


def robustness_curves(record: dict, radii=CURVE_RADII) -> pd.DataFrame:
    """Notebook 02's worst-case test accuracy in a TV ball around the training mix of its primary stage's
    split, from the recorded test margins: label (the setting), level, radius, accuracy (mean over seeds).
    Empty when the record holds no test margins."""
    margins = record.get("test_margins") or []
    primary = recorded_primary(record)
    if not margins or primary is None:
        return pd.DataFrame(columns=["label", "level", "radius", "accuracy"])
    stage = primary[0]
    split = reward_grid.parse_stage(stage)["train_split"]
    mix = dict.fromkeys(record["splits"][split][0], 1.0)
    curves = pd.concat(
        [
            robustness.robustness_curve(
                m["margins"], record["test_domains"], mix, "tv", list(radii)
            ).assign(label=m["label"].removeprefix(f"{stage} | "), seed=m["seed"])
            for m in margins
        ]
    )
    return curves.groupby(["label", "level", "radius"], as_index=False)["accuracy"].mean()


def robustness_figure(curves: pd.DataFrame):
    """The `robustness_curves`, one line per setting and level (pairs or domains)."""
    return px.line(
        curves,
        x="radius",
        y="accuracy",
        color="label",
        line_dash="level",
        markers=True,
        title="02: worst-case test accuracy in a TV ball around the training mix (mean over seeds)",
        labels={"radius": "TV radius around the training mix", "accuracy": "worst-case accuracy"},
    )


def _primary_lines(table: pd.DataFrame) -> list[str]:
    lines = [
        "| notebook | stage | setting | metric | seeds | gain [95% CI] | MDE | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        if pd.isna(r.mean_diff):
            lines.append(
                f"| {r.notebook} | {r.stage} | {r.setting} | | | not in its comparisons table | | |"
            )
            continue
        gain = f"{r.mean_diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
        lines.append(
            f"| {r.notebook} | {r.stage} | {r.setting} | {r.metric} | {int(r.n_seeds)} | {gain} | "
            f"{r.mde:.3f} | {r.verdict} |"
        )
    return lines


def findings_markdown(
    primary_rows: pd.DataFrame, conclusion: str, paired: pd.DataFrame, missing: list[str]
) -> str:
    """Notebook 05's findings: each notebook's primary comparison (`primary_table`), the best robust setting
    of each stage against ordinary (`drostudy.analysis.results.conclusion_text`'s lines), and every paired
    OOD-mean comparison with its verdict (the README's table, drostudy.analysis.findings; its map is the
    figure above)."""
    parts = [
        "**Each notebook's primary comparison**, named before it ran (OOD mean of the stage's quality "
        "metric, paired against ordinary training):",
        "\n".join(_primary_lines(primary_rows)) if len(primary_rows) else "No record names one yet.",
        "**The best robust setting of each stage** (means over seeds of every run, pooled):",
        "\n".join(f"- {line}" for line in conclusion.splitlines()),
        "**Every paired comparison**:",
    ]
    pooled = findings.findings_markdown(paired, missing)
    the_map = Path(findings.MAP_FIGURE).stem  # shown above as a figure: its README lines are left out
    parts.append("\n".join(line for line in pooled.splitlines() if the_map not in line).strip())
    return "\n\n".join(parts)
