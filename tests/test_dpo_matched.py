"""Notebook 03's matched comparison (drostudy.analysis.dpo_matched) on constructed results: ordinary DPO's
beta curve is linear in ID accuracy, OOD accuracy and KL; a robust setting on that curve has a matched
difference of 0 on both matchings, one above it a positive one; the knob runs stay out of the plain family."""

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import dpo_matched, stats

KNOBS = {"ordinary": 0.1, "ordinary beta 0.4": 0.4, "ordinary beta 1.6": 1.6}
SEEDS = range(5)


def _curve(t: float, seed: int) -> dict:
    """Ordinary DPO's numbers at position t in [0, 1] along its beta curve (t=0: beta 0.1): a larger beta
    keeps it closer to the reference (lower KL), with lower ID and higher OOD accuracy."""
    noise = 0.01 * np.sin(seed + 1)
    return {
        ("accuracy", "id"): 0.80 - 0.10 * t + noise,
        ("accuracy", "ood"): 0.70 + 0.04 * t + noise,
        ("kl", "ood"): 0.40 - 0.30 * t,
    }


def _results() -> pd.DataFrame:
    positions = {"ordinary": 0.0, "ordinary beta 0.4": 0.5, "ordinary beta 1.6": 1.0}
    rows = []
    for seed in SEEDS:
        values = {s: _curve(t, seed) for s, t in positions.items()}
        values["tv 0.2"] = _curve(0.3, seed)  # on the curve: a shift along beta
        values["dr_dpo"] = _curve(0.3, seed) | {
            ("accuracy", "ood"): _curve(0.3, seed)[("accuracy", "ood")] + 0.02
        }
        for setting, metrics in values.items():
            for (metric, split), value in metrics.items():
                rows.append(("dpo", setting, seed, split, "mean", metric, value))
    return pd.DataFrame(rows, columns=["stage", "setting", "seed", "split", "domain", "metric", "value"])


def test_plain_family_leaves_the_knob_runs_out():
    results = _results()
    plain = dpo_matched.plain_results(results, KNOBS)
    assert set(plain.setting) == {"ordinary", "tv 0.2", "dr_dpo"}
    table = stats.comparisons_table(plain, lower_is_better=("kl",))
    assert set(table.setting) == {"tv 0.2", "dr_dpo"} and set(table.baseline) == {"ordinary"}


def test_a_shift_along_beta_matches_to_zero_and_a_point_above_to_its_gain():
    results = _results()
    rows = dpo_matched.matched_rows(results, KNOBS)
    assert tuple(rows.columns) == stats.COLUMNS
    names = {dpo_matched.baseline_name(m) for m in dpo_matched.MATCH_ON}
    assert names == {"ordinary matched on id accuracy (beta)", "ordinary matched on ood kl (beta)"}
    assert set(rows.baseline) == names and len(rows) == 4
    for _, row in rows.iterrows():
        assert (row.split, row.domain, row.metric, row.n_seeds) == ("ood", "mean", "accuracy", 5)
        expected = 0.0 if row.setting == "tv 0.2" else 0.02
        assert row.mean_diff == pytest.approx(expected, abs=1e-12)
    diagnosed = dpo_matched.diagnostics(results, KNOBS)
    assert (diagnosed.seeds_left_out == 0).all() and set(diagnosed.baseline) == names
    text = dpo_matched.matched_conclusion(rows, diagnosed, "tv 0.2", 0.03)
    assert text.startswith("Matched primary: tv 0.2 - ordinary matched on id accuracy (beta)")
    assert "5 of 5 seeds bracketed" in text and text.count("\n- ") == 4


def test_frontier_curves_and_sentences():
    results = _results()
    curves = dpo_matched.curves(KNOBS, ["ordinary", "tv 0.2", "dr_dpo", *KNOBS], {"dr_dpo": 0.1})
    assert curves == {
        "ordinary (beta)": KNOBS,
        "dr_dpo": {"dr_dpo": 0.1},
        "tv (radius)": {"ordinary": 0.0, "tv 0.2": 0.2},
    }
    figures = dpo_matched.frontier_figures(results, curves)
    points, fig = figures["kl_ood"]
    assert len(fig.data) == 3 and set(points.setting) == {"tv 0.2", "dr_dpo", *KNOBS}
    assert dpo_matched.frontier_sentence(points, "tv 0.2").startswith("tv 0.2 at x 0.310")  # its KL
    above = dpo_matched.frontier_sentence(figures["id_ood"][0], "dr_dpo")
    assert "above ordinary's beta curve" in above
    table = pd.DataFrame(
        [
            (
                s,
                "OOD mean",
                m,
                results.query("setting == @s and metric == @m and split == 'ood'").value.mean(),
            )
            for s in (*KNOBS, "tv 0.2")
            for m in ("accuracy", "kl")
        ],
        columns=["label", "domain", "metric", "mean"],
    )
    sentence = dpo_matched.kl_sentence(table, KNOBS, "tv 0.2")
    assert "reaches tv 0.2's KL at beta 0.4, 1.6 and its OOD accuracy there too at 0.4, 1.6" in sentence
