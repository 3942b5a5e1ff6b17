"""drostudy.analysis.matched_findings: plain and matched gains side by side, their reading, and that the
matched rows stay out of the study's other tables (findings, 05's primaries and map, 05's run tables)."""

from __future__ import annotations

import pandas as pd
import pytest

from drostudy.analysis import findings, matched_findings, ood_study
from drostudy.analysis.stats import COLUMNS
from drostudy.analysis.tidy import tidy

ID_BETA = "ordinary matched on id correct (beta)"
KL_BETA = "ordinary matched on ood kl (beta)"


def _row(stage, setting, baseline, mean, verdict, metric="correct", split="ood"):
    return dict(
        stage=stage,
        setting=setting,
        baseline=baseline,
        split=split,
        domain="mean",
        metric=metric,
        n_seeds=10,
        mean_diff=mean,
        ci_low=mean - 0.004,
        ci_high=mean + 0.004,
        mde=0.006,
        verdict=verdict,
    )


def _table():
    rows = [
        _row("rl", "tv 0.2", "ordinary", 0.018, "better"),
        _row("rl", "tv 0.2", ID_BETA, 0.007, "better"),
        _row("rl", "tv 0.2", KL_BETA, 0.001, "not resolved"),
        _row("rl", "tv 0.4", "ordinary", 0.027, "better"),
        _row("rl", "tv 0.4", ID_BETA, -0.001, "not resolved"),
        _row("rl", "tv 0.4", "ordinary", 0.5, "better", metric="kl"),  # not a quality metric
        _row("dpo", "tv 0.2", "ordinary", 0.0, "not resolved", metric="accuracy"),
        _row("dpo", "tv 0.2", "ordinary matched on id accuracy (beta)", 0.01, "better", "accuracy"),
        _row("dpo", "kl 0.5", "ordinary", 0.01, "better", metric="accuracy", split="id"),
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS)).assign(notebook="04")


def test_matched_rows_sit_beside_their_plain_row_with_a_reading():
    rows = matched_findings.matched_table(_table()).set_index(["stage", "setting", "matched_on"])
    assert len(rows) == 4
    survives = rows.loc[("rl", "tv 0.2", "id correct")]
    assert survives.plain.startswith("+0.0180") and survives.matched.startswith("+0.0070")
    assert survives.knob == "beta" and survives.reading == "survives"
    assert rows.loc[("rl", "tv 0.2", "ood kl")].reading == "regularisation explains it"
    assert rows.loc[("rl", "tv 0.4", "id correct")].reading == "regularisation explains it"
    assert rows.loc[("dpo", "tv 0.2", "id accuracy")].reading == "no plain gain"


def test_stage_sentences_count_what_survives():
    text = matched_findings.matched_markdown(_table())
    assert "| rl | tv 0.2 | +0.0180 [+0.0140, +0.0220] | better | id correct (beta) |" in text
    assert "rl: 1 of 3 matched comparisons" in text
    assert "explained by regularisation: tv 0.2 on ood kl (beta), tv 0.4 on id correct (beta)" in text
    assert "dpo: no robust setting beats plain ordinary" in text
    assert "1 of 1 matched comparisons resolve better (tv 0.2 on id accuracy (beta)): there the" in text
    assert "lies above ordinary's knob curve" in text
    unresolved = _table().replace({"verdict": {"better": "not resolved"}})
    assert "none of its 1 matched comparisons resolves better" in matched_findings.matched_markdown(
        unresolved
    )
    assert matched_findings.matched_markdown(_table().iloc[:1]) == ""


def test_the_figure_puts_plain_and_matched_gains_side_by_side():
    long = matched_findings.gains_long(_table())
    assert set(long.against) == {
        "plain ordinary",
        "matched on id correct (beta)",
        "matched on ood kl (beta)",
        "matched on id accuracy (beta)",
    }
    assert len(long) == 7  # rl tv 0.2: 3, rl tv 0.4: 2, dpo tv 0.2: 2
    fig = matched_findings.gains_figure(long)
    assert {t.name for t in fig.data} == set(long.against)


def test_matched_rows_stay_out_of_the_plain_tables():
    table = _table()
    text = findings.findings_markdown(table, [])
    plain_part, matched_part = text.split("**Is robustness more than regularisation?**")
    assert "+0.007" not in plain_part and "+0.0070" in matched_part
    gains = findings.gain_map(table, {})
    assert set(gains.baseline) == {"ordinary"}
    named = pd.DataFrame([dict(notebook="04", stage="rl", setting="tv 0.2")])
    primary = ood_study.primary_table(table, named)
    assert len(primary) == 1 and primary.mean_diff.iat[0] == pytest.approx(0.018)


def test_knob_runs_give_no_rows_to_the_pooled_run_table():
    metrics = dict(
        stage="rl",
        method="ordinary",
        divergence="tv",
        radius=0.0,
        seed=0,
        train_domains="math",
        eval_domains="code",
        per_domain={"math": {"correct": 0.5}},
    )
    assert len(tidy(metrics)) == 1
    assert tidy(metrics | {"knob": {"beta": 0.4}}) == []


def test_a_setting_without_bracketed_seeds_reads_no_comparison():
    table = _table()
    nan = dict(mean_diff=float("nan"), ci_low=float("nan"), ci_high=float("nan"), mde=float("nan"))
    table.loc[table.baseline == KL_BETA, list(nan)] = list(nan.values())
    text = matched_findings.matched_markdown(table)
    assert "| ood kl (beta) | 10 | no comparison |  | not resolved |" in text
    assert "nan" not in text
