"""Is robustness more than regularisation, per stage: each robust setting's plain OOD gain over ordinary
training beside its gain over ordinary training moved along its own knob to the same in-distribution quality
(or KL) on the same seed (drostudy.analysis.matched), read from the pooled comparisons tables.

A plain row has baseline "ordinary"; a matched row's baseline is "ordinary matched on <split> <metric>
(<knob>)". Both are OOD-mean rows of the stage's quality metric (stats.QUALITY_METRICS). What the pair
says (`reading`):
- "survives": the plain gain is resolved better and so is the matched one;
- "regularisation explains it": plain better, matched not resolved or worse (ordinary training's own knob
  gives as much at the same ID quality / KL);
- "no plain gain": the plain comparison is not resolved better, so there is nothing to explain; the matched
  verdict is still shown (a robust setting can lie above ordinary's curve without beating plain ordinary).
"""

from __future__ import annotations

import re

import pandas as pd

from drostudy.analysis import stats
from drostudy.analysis.stats import QUALITY_METRICS

PLAIN = "ordinary"
MATCHED = re.compile(r"^ordinary matched on (?P<split>\S+) (?P<metric>\S+) \((?P<knob>[^)]+)\)$")
TABLE_COLUMNS = (
    "notebook",
    "stage",
    "setting",
    "metric",
    "plain",
    "plain_verdict",
    "matched_on",
    "knob",
    "n_seeds",
    "matched",
    "matched_verdict",
    "mde",
    "reading",
)


def is_plain(table: pd.DataFrame) -> pd.Series:
    """Rows compared with plain ordinary training (the rows every other table of the study reads)."""
    return table.baseline == PLAIN


def matched_table(table: pd.DataFrame) -> pd.DataFrame:
    """Every matched OOD-mean quality row of `table` (pooled comparisons with a `notebook` column) beside
    the plain row of the same stage and setting: TABLE_COLUMNS, gains as "+0.018 [+0.015, +0.021]"."""
    ood = table[(table.split == "ood") & (table.domain == "mean") & table.metric.isin(QUALITY_METRICS)]
    plain = ood[is_plain(ood)].set_index(["stage", "setting", "metric"])
    rows = []
    for r in ood[~is_plain(ood)].itertuples():
        m = MATCHED.match(r.baseline)
        if m is None:
            continue
        key = (r.stage, r.setting, r.metric)
        p = plain.loc[key] if key in plain.index else None
        plain_verdict = p.verdict if p is not None else "not compared"
        rows.append(
            (
                getattr(r, "notebook", ""),
                r.stage,
                r.setting,
                r.metric,
                _gain(p) if p is not None else "",
                plain_verdict,
                f"{m['split']} {m['metric']}",
                m["knob"],
                int(r.n_seeds),
                _gain(r),
                r.verdict,
                r.mde,
                reading(plain_verdict, r.verdict),
            )
        )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def gains_long(table: pd.DataFrame) -> pd.DataFrame:
    """The OOD-mean quality rows of every setting that has a matched row, plain and matched, for the
    figure: stage, setting, against ("plain ordinary" or "matched on <split> <metric> (<knob>)"),
    mean_diff, ci_low, ci_high, verdict."""
    ood = table[(table.split == "ood") & (table.domain == "mean") & table.metric.isin(QUALITY_METRICS)]
    matched = ood[ood.baseline.str.match(MATCHED.pattern)]
    keys = set(zip(matched.stage, matched.setting, strict=True))
    rows = ood[[k in keys for k in zip(ood.stage, ood.setting, strict=True)]]
    rows = rows[is_plain(rows) | rows.baseline.str.match(MATCHED.pattern)]
    against = rows.baseline.map(
        lambda b: "plain ordinary" if b == PLAIN else b.removeprefix("ordinary ")
    )
    columns = ["stage", "setting", "mean_diff", "ci_low", "ci_high", "verdict"]
    return rows[columns].assign(against=against.to_numpy()).reset_index(drop=True)


def gains_figure(long: pd.DataFrame):
    """Per stage (a panel each), every robust setting's OOD gain against plain ordinary training and
    against each matched baseline, side by side with their 95% intervals (`gains_long`)."""
    import plotly.express as px

    from drostudy.plotting import TEMPLATE

    long = long.assign(up=long.ci_high - long.mean_diff, down=long.mean_diff - long.ci_low)
    fig = px.scatter(
        long,
        x="setting",
        y="mean_diff",
        error_y="up",
        error_y_minus="down",
        color="against",
        facet_col="stage",
        hover_data=["verdict"],
        labels={"mean_diff": "OOD-mean gain (95% interval)", "against": "gain against"},
        title="Robust OOD gain against plain ordinary training and against ordinary at its matched knob",
    )
    fig.update_xaxes(matches=None)
    fig.update_traces(marker=dict(size=9))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(template=TEMPLATE, scattermode="group")
    return fig


def reading(plain_verdict: str, matched_verdict: str) -> str:
    """What a plain verdict and a matched verdict say together (module docstring)."""
    if plain_verdict != "better":
        return "no plain gain"
    return "survives" if matched_verdict == "better" else "regularisation explains it"


def matched_markdown(table: pd.DataFrame) -> str:
    """The README's and notebook 05's table of `matched_table` rows, with a line per stage saying whether
    its robust gains survive; "" when no notebook wrote matched rows yet."""
    rows = matched_table(table)
    if rows.empty:
        return ""
    lines = [
        "| stage | setting | plain gain [95% CI] | verdict | matched on (knob) | seeds | matched gain "
        "[95% CI] | MDE | verdict | reading |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.stage} | {r.setting} | {r.plain} | {r.plain_verdict} | {r.matched_on} ({r.knob}) | "
        f"{r.n_seeds} | {r.matched} | {'' if pd.isna(r.mde) else f'{r.mde:.3f}'} | {r.matched_verdict} | "
        f"{r.reading} |"
        for r in rows.itertuples()
    ]
    lines += ["", *(f"- {line}" for line in stage_sentences(rows))]
    return "\n".join(lines)


def stage_sentences(rows: pd.DataFrame) -> list[str]:
    """One sentence per stage from `matched_table` rows: which plain gains survive which matching."""
    out = []
    for stage, block in rows.groupby("stage", sort=True):
        gains = block[block.plain_verdict == "better"]
        if gains.empty:
            above = block[block.matched_verdict == "better"]
            out.append(
                f"{stage}: no robust setting beats plain ordinary training, so there is no gain to test "
                f"against ordinary's knob; "
                + (
                    f"{len(above)} of {len(block)} matched comparisons resolve better ({_names(above)}): "
                    "there the robust point lies above ordinary's knob curve (moved along that knob to "
                    "the robust run's ID quality or KL, ordinary training does worse out of distribution), "
                    "though not above plain ordinary training."
                    if len(above)
                    else f"none of its {len(block)} matched comparisons resolves better either."
                )
            )
            continue
        kept = gains[gains.reading == "survives"]
        out.append(
            f"{stage}: {len(kept)} of {len(gains)} matched comparisons of robust settings that beat plain "
            f"ordinary still resolve better at ordinary's matched knob"
            + (f" ({_names(kept)})" if len(kept) else "")
            + (
                f"; explained by regularisation: {_names(gains.drop(kept.index))}"
                if len(kept) < len(gains)
                else ""
            )
            + "."
        )
    return out


def _names(block: pd.DataFrame) -> str:
    return ", ".join(f"{r.setting} on {r.matched_on} ({r.knob})" for r in block.itertuples())


def _gain(row) -> str:
    if pd.isna(row.mean_diff):  # fewer than 2 seeds inside ordinary's range (matched_diagnostics)
        return "no comparison"
    return f"{row.mean_diff:+.4f} [{row.ci_low:+.4f}, {row.ci_high:+.4f}]" + (
        " (fragile)" if stats.is_fragile(row.ci_low, row.ci_high) else ""
    )
