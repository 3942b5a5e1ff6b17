"""The map of when robustness pays, from every `results/NN_<notebook>.comparisons.csv`, and the README's
"What the study found" section generated from it: `python -m drostudy.analysis.findings`.

The section lives between FINDINGS_START and FINDINGS_END in README.md; only that text is replaced, and
every number in it comes from the comparisons tables (drostudy.analysis.stats.COLUMNS).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from drostudy.analysis import matched_findings, provenance, reward_grid, stats
from drostudy.analysis.capacity import kl_sentence
from drostudy.analysis.records import read_record, record_files
from drostudy.analysis.stats import QUALITY_METRICS
from drostudy.io import atomic_write_text

FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
EXPECTED = {"02": "reward models", "03": "DPO", "04": "RL"}
MAP_FIGURE = "figures/05_ood_analysis_when_robustness_pays.html"
CAPACITY_RECORD = "06_capacity.json"  # notebook 06 (`make capacity`), outside `make study`
CAPACITY_FIGURE = "figures/06_capacity_gains.png"
CAPACITY_STAGES = ("dpo", "reward", "testbed")  # notebook 06's STAGES


def load_comparisons(results: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """(all comparisons tables with a `notebook` column, lines naming the expected notebooks still missing)."""
    results = Path(results)
    frames, missing = [], []
    for number, what in EXPECTED.items():
        paths = sorted(results.glob(f"{number}_*.comparisons.csv"))
        if not paths:
            missing.append(f"{number}_*.comparisons.csv missing: run notebooks/{number} ({what})")
        for path in paths:
            frame = pd.read_csv(path)
            if tuple(frame.columns) != stats.COLUMNS:
                raise ValueError(f"{path} must have the columns {list(stats.COLUMNS)}")
            frames.append(frame.assign(notebook=number))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*stats.COLUMNS])
    return table, missing


def recorded_severity(results: str | Path) -> dict[str, float]:
    """Shift severity per stage, from every results/NN_*.json that records one (`severity`)."""
    out = {}
    for path in record_files(results, "[0-9][0-9]_*.json"):
        out.update(json.loads(path.read_text()).get("severity") or {})
    return out


def gain_map(table: pd.DataFrame, severity: dict[str, float]) -> pd.DataFrame:
    """OOD-mean paired gains in each stage's quality metric (QUALITY_METRICS) with stage/setting parsed, shift
    severity (NaN if unrecorded) and a `series` label `<stage kind> <ambiguity set>` for the figures."""
    plain = table[matched_findings.is_plain(table)]  # the matched rows have their own table
    ood = reward_grid.ood_mean(plain[plain.metric.isin(QUALITY_METRICS)])
    ood["severity"] = ood.stage.map(severity)
    ood["series"] = ood.stage_kind + " " + ood.ambiguity
    return ood


def map_figure(gains: pd.DataFrame):
    """Paired OOD gain against shift severity (left) and label noise (right), one line per stage kind and
    ambiguity set, for the settings compared in more than one stage (the headline ones)."""
    from plotly.subplots import make_subplots

    from drostudy import plotting

    shared = gains.groupby("setting").stage.transform("nunique") > 1
    gains = gains[shared]
    noisy_splits = set(gains[gains.label_noise > 0].train_split)
    panels = (
        ("severity", gains[(gains.label_noise == 0) & gains.severity.notna()]),
        ("label_noise", gains[gains.train_split.isin(noisy_splits)]),
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=("vs shift severity", "vs label noise"))
    colors = plotting.color_map(sorted(set(gains.series)))
    for col, (x, part) in enumerate(panels, start=1):
        for series, line in part.groupby("series", sort=True):
            line = line.groupby(x, as_index=False)[["mean_diff", "ci_low", "ci_high"]].mean()
            plotting.add_gain_line(
                fig,
                line,
                x,
                series,
                colors[series],
                legendgroup=series,
                showlegend=col == 1,
                row=1,
                col=col,
            )
        fig.add_hline(y=0, line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_layout(
        template=plotting.TEMPLATE, title="When does robustness pay: paired OOD gain vs ordinary"
    )
    fig.update_xaxes(title="ordinary ID - OOD accuracy", row=1, col=1)
    fig.update_xaxes(title="fraction of training labels flipped", row=1, col=2)
    fig.update_yaxes(title="paired gain (95% interval)", row=1, col=1)
    return fig


def _fmt(row) -> str:
    return f"{row.mean_diff:+.3f} [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"


def _verdict(row) -> str:
    """The verdict, marked fragile when an end of its interval lies within FRAGILE of 0 (stats.is_fragile)."""
    return row.verdict + (" (fragile)" if stats.is_fragile(row.ci_low, row.ci_high) else "")


def provenance_lines(provenance: dict, stale: dict[str, list[str]]) -> list[str]:
    """Where the numbers come from (results/PROVENANCE.json) and which notebooks' code changed since."""
    notebooks = provenance.get("notebooks") or {}
    if not notebooks:
        return ["Provenance: no results/PROVENANCE.json yet (written by `make study`)."]
    git, box = provenance.get("git") or {}, provenance.get("machine") or {}
    commit = (git.get("commit") or "unknown")[:10] + (
        " with uncommitted changes" if git.get("dirty") else ""
    )
    times = ", ".join(
        f"{stem[:2]} {e['wall_s'] / 60:.1f} min" for stem, e in notebooks.items() if e.get("wall_s")
    )
    sizes = sorted(
        {"FULL" if e.get("params", {}).get("FULL") else "default" for e in notebooks.values()}
    )
    smoke = any(e.get("params", {}).get("SMOKE") for e in notebooks.values())
    lines = [
        f"Provenance (`results/PROVENANCE.json`): `make study` at {'/'.join(sizes)} size"
        f"{' (SMOKE)' if smoke else ''}, code of commit `{commit}`, on {box.get('cpu', '?')} "
        f"({box.get('cores', '?')} cores, torch {box.get('torch', '?')}), last notebook run "
        f"{max(e.get('date', '') for e in notebooks.values())[:10]}; wall time of each notebook's latest run "
        f"(a resumed one reuses its finished training runs and takes less): {times}."
    ]
    if stale:
        named = "; ".join(f"{stem} ({', '.join(why)})" for stem, why in sorted(stale.items()))
        lines.append(f"**Older than the code** (rerun `make study` to refresh): {named}.")
    else:
        lines.append("Every notebook's results were made by the code as it is in this commit.")
    return lines


def _stage_minutes(run: dict) -> str:
    """A stage's cost: its runs' training time as each was trained, else (older records) the wall time."""
    if "run_seconds" in run:
        return f"{run['run_seconds'] / 60:.1f} min of training"
    return f"{run['seconds'] / 60:.1f} min"


def capacity_markdown(record: dict) -> list[str]:
    """Notebook 06's paired OOD-mean gains at each capacity point, in its plan's order, from its record
    (`gains`, `primary`, `stage_runs`): a table and the stages still to run; [] without a record."""
    if not record.get("gains"):
        return []
    primary = record.get("primary") or {}
    lines = [
        "**Does the verdict survive capacity?** Notebook 06 (`make capacity`, outside `make study`) trains "
        "each stage's ordinary, primary robust and group settings at higher capacity on the same paired "
        "seeds; each gain is against ordinary training at the same capacity (OOD mean, 95% interval; the "
        "primary setting's rows are the named comparisons, the group rows exploratory). Stages run, with "
        "their time on 2 cores: "
        + "; ".join(
            f"{name} {run['runs']:,} runs, {_stage_minutes(run)} ({run['date'][:10]})"
            for name, run in sorted((record.get("stage_runs") or {}).items())
        )
        + ".",
        "",
        "| stage | capacity | setting | seeds | gain [95% CI] | half-width | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["gains"]:
        named = " (primary)" if primary.get(row["stage"]) == row["setting"] else ""
        lines.append(
            f"| {row['stage']} | {row['capacity']} | {row['setting']}{named} | {row['n_seeds']} | "
            f"{row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | "
            f"{row['half_width']:.4f} | {row['verdict']} |"
        )
    travelled = kl_sentence(pd.DataFrame(record.get("kl_travelled") or []))  # how far DPO moved
    lines += ["", travelled] if travelled else []
    left = sorted(set(CAPACITY_STAGES) - set(record.get("stage_runs") or {}))
    if left:
        lines += ["", f"Not run yet at this size: {', '.join(left)} (`make capacity STAGES=...`)."]
    return [*lines, "", f"![paired OOD gain against capacity, per stage]({CAPACITY_FIGURE})"]


def findings_markdown(
    table: pd.DataFrame,
    missing: list[str],
    figure: str = MAP_FIGURE,
    provenance: dict | None = None,
    stale: dict[str, list[str]] | None = None,
    capacity: dict | None = None,
) -> str:
    """The README section: the OOD-mean comparisons of every stage, the verdict counts, the map, notebook
    06's capacity gains (`capacity`: its record) and where the numbers come from (`provenance`, and the
    notebooks `stale` since, from drostudy.analysis.provenance)."""
    if table.empty:
        return "No comparisons recorded yet: run the study (`make study`), then regenerate this section."
    plain = table[matched_findings.is_plain(table)]
    ood = plain[(plain.split == "ood") & (plain.domain == "mean") & plain.metric.isin(QUALITY_METRICS)]
    counts = ood.verdict.value_counts().reindex(list(stats.VERDICTS), fill_value=0)
    lines = [
        "Paired gain in the out-of-distribution mean of each stage's quality metric (preference accuracy for "
        "reward models and DPO, reference-graded correctness for RL) against ordinary training on the same "
        "seeds (95% interval; verdicts Holm-corrected except each notebook's named primary comparison; MDE: "
        "the smallest gain detectable with 80% power; fragile: an end of the interval lies within "
        f"{stats.FRAGILE} of 0, so a rerun elsewhere may move the verdict). Margins, KL and learned reward "
        "are in the same CSVs. "
        "Generated by `python -m drostudy.analysis.findings` from `results/*.comparisons.csv`.",
        "",
        "| stage | setting | metric | seeds | gain [95% CI] | MDE | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.stage} | {r.setting} | {r.metric} | {r.n_seeds} | {_fmt(r)} | {r.mde:.3f} | {_verdict(r)} |"
        for r in ood.itertuples()
    ]
    lines += [
        "",
        f"Resolved: {counts['better']} better, {counts['worse']} worse; {counts['not resolved']} not resolved.",
    ]
    lines += [f"Not yet recorded: {m}." for m in missing]
    matched = matched_findings.matched_markdown(table)
    if matched:
        lines += [
            "",
            "**Is robustness more than regularisation?** Each robust setting's OOD gain against plain "
            "ordinary training, beside its gain against ordinary training moved along its own knob to the "
            "same in-distribution quality (or KL to the reference) on the same seed, interpolated "
            "monotonically in the knob (drostudy.analysis.matched; seeds outside ordinary's range are left "
            "out, not extrapolated; Holm over each stage's robust settings):",
            "",
            matched,
        ]
    png = str(
        Path(figure).with_suffix(".png")
    )  # committed with the results; the HTML is made by make study
    lines += [
        "",
        f"Map of when robustness pays (notebook 05; interactive after `make study`: `{figure}`):",
    ]
    lines += ["", f"![paired OOD gain against shift severity and label noise]({png})"]
    capacity_lines = capacity_markdown(capacity or {})
    lines += ["", *capacity_lines] if capacity_lines else []
    if provenance is not None:
        lines += ["", *provenance_lines(provenance, stale or {})]
    return "\n".join(lines)


def replace_between(text: str, body: str) -> str:
    """`text` with what lies between FINDINGS_START and FINDINGS_END replaced by `body` (markers kept)."""
    start, end = text.find(FINDINGS_START), text.find(FINDINGS_END)
    if start < 0 or end < start:
        raise ValueError(f"text must contain {FINDINGS_START} followed by {FINDINGS_END}")
    return text[: start + len(FINDINGS_START)] + "\n" + body.strip() + "\n" + text[end:]


def section(results: str | Path, notebooks: str | Path | None = None) -> str:
    """The findings section as `results` (comparisons CSVs, PROVENANCE.json) and the code now make it."""
    table, missing = load_comparisons(results)
    record = provenance.read_provenance(results)
    stale = provenance.stale_notebooks(record, notebooks)
    path = Path(results) / CAPACITY_RECORD
    capacity = read_record(path) if path.exists() else None
    return findings_markdown(table, missing, provenance=record, stale=stale, capacity=capacity)


def update_readme(readme: str | Path, results: str | Path) -> str:
    """Regenerate the findings section of `readme` from the comparisons tables under `results`."""
    readme = Path(readme)
    text = replace_between(readme.read_text(), section(results))
    atomic_write_text(readme, text)
    return text


def main(argv=None) -> int:
    from drostudy.analysis.tidy import results_dir

    parser = argparse.ArgumentParser(
        description="write README's 'What the study found' from the results"
    )
    parser.add_argument("--readme", default=str(Path(__file__).resolve().parents[2] / "README.md"))
    parser.add_argument("--results", default=None, help="results folder (default: drostudy's)")
    args = parser.parse_args(argv)
    update_readme(args.readme, args.results or results_dir())
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
