"""Notebook 03's matched comparison (drostudy.analysis.dpo_matched) on constructed results: ordinary DPO's
beta and steps curves lie on one line in ID accuracy, OOD accuracy and KL; a robust setting on that line
has a matched difference of 0 along both knobs and on both matchings, one above it a positive one; a point
only the steps curve reaches is left out along beta, not extrapolated; the knob runs stay out of the plain
family."""

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import dpo_matched, stats

CURVES = {
    "beta": {"ordinary": 0.1, "ordinary beta 0.4": 0.4, "ordinary beta 1.6": 1.6},
    "steps": {"ordinary": 6.0, "ordinary steps 3": 3.0, "ordinary steps 12": 12.0},
}
KNOBS = CURVES["beta"]
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
    positions |= {"ordinary steps 3": 1.5, "ordinary steps 12": -0.5}  # fewer steps: more regularised
    rows = []
    for seed in SEEDS:
        values = {s: _curve(t, seed) for s, t in positions.items()}
        values["tv 0.2"] = _curve(0.3, seed)  # on the curve: a shift along beta
        values["kl 0.1"] = _curve(1.2, seed)  # beyond beta 1.6, within steps 3
        values["dr_dpo"] = _curve(0.3, seed) | {
            ("accuracy", "ood"): _curve(0.3, seed)[("accuracy", "ood")] + 0.02
        }
        for setting, metrics in values.items():
            for (metric, split), value in metrics.items():
                rows.append(("dpo", setting, seed, split, "mean", metric, value))
    return pd.DataFrame(rows, columns=["stage", "setting", "seed", "split", "domain", "metric", "value"])


def test_plain_family_leaves_the_knob_runs_out():
    results = _results()
    plain = dpo_matched.plain_results(results, CURVES)
    assert set(plain.setting) == {"ordinary", "tv 0.2", "kl 0.1", "dr_dpo"}
    table = stats.comparisons_table(plain, lower_is_better=("kl",))
    assert set(table.setting) == {"tv 0.2", "kl 0.1", "dr_dpo"} and set(table.baseline) == {"ordinary"}


def test_a_shift_along_either_knob_matches_to_zero_and_a_point_above_to_its_gain():
    results = _results()
    with pytest.warns(UserWarning, match="fewer than 2"):  # kl 0.1 along beta: no seed bracketed
        rows, diagnosed = dpo_matched.matched(results, CURVES)
    assert tuple(rows.columns) == stats.COLUMNS
    names = [dpo_matched.baseline_name(m, k) for k in CURVES for m in dpo_matched.MATCH_ON]
    assert names[:2] == ["ordinary matched on id accuracy (beta)", "ordinary matched on ood kl (beta)"]
    assert list(dict.fromkeys(rows.baseline)) == names and len(rows) == 3 * 4
    for _, row in rows.iterrows():
        beyond_beta = row.setting == "kl 0.1" and row.baseline.endswith("(beta)")
        assert (row.split, row.domain, row.metric) == ("ood", "mean", "accuracy")
        assert row.n_seeds == (0 if beyond_beta else 5)
        if beyond_beta:  # left out, not extrapolated
            assert np.isnan(row.mean_diff) and row.verdict == "not resolved"
            continue
        expected = 0.02 if row.setting == "dr_dpo" else 0.0
        assert row.mean_diff == pytest.approx(expected, abs=1e-12)
    left_out = diagnosed.set_index(["baseline", "setting"]).seeds_left_out
    assert left_out[(names[0], "kl 0.1")] == 5 and left_out[(names[2], "kl 0.1")] == 0
    assert left_out.drop("kl 0.1", level="setting").eq(0).all()
    text = dpo_matched.matched_conclusion(rows, diagnosed, "tv 0.2", names[2], 0.03)
    assert text.startswith("Matched primary: tv 0.2 - ordinary matched on id accuracy (steps)")
    assert "5 of 5 seeds bracketed" in text and "0 of 5 seeds bracketed" in text
    assert text.count("\n- ") == 12 and "no comparison" in text


def test_frontier_curves_and_sentences():
    results = _results()
    results = results[~results.setting.isin(["kl 0.1"])]
    settings = ["ordinary", "tv 0.2", "dr_dpo", *KNOBS, *CURVES["steps"]]
    curves = dpo_matched.frontier_curves(CURVES, settings, {"dr_dpo": 0.1})
    assert curves == {
        "ordinary (beta)": KNOBS,
        "ordinary (steps)": CURVES["steps"],
        "dr_dpo": {"dr_dpo": 0.1},
        "tv (radius)": {"ordinary": 0.0, "tv 0.2": 0.2},
    }
    figures = dpo_matched.frontier_figures(results, curves)
    points, fig = figures["kl_ood"]
    assert len(fig.data) == 4 and set(points.setting) == {"tv 0.2", "dr_dpo", *KNOBS, *CURVES["steps"]}
    assert dpo_matched.frontier_sentence(points, "tv 0.2", "beta").startswith("tv 0.2 at x 0.310")
    above = dpo_matched.frontier_sentence(figures["id_ood"][0], "dr_dpo", "steps")
    assert "above ordinary's steps curve" in above
    along_beta = dpo_matched.frontier_sentence(figures["id_ood"][0], "dr_dpo", "beta")
    assert "above ordinary's beta curve" in along_beta
    table = pd.DataFrame(
        [
            (
                s,
                "OOD mean",
                m,
                results.query("setting == @s and metric == @m and split == 'ood'").value.mean(),
            )
            for s in dict.fromkeys((*KNOBS, *CURVES["steps"], "tv 0.2"))
            for m in ("accuracy", "kl")
        ],
        columns=["label", "domain", "metric", "mean"],
    )
    sentence = dpo_matched.kl_sentence(table, CURVES, "tv 0.2")
    reach = "as ordinary beta 0.4, ordinary beta 1.6, ordinary steps 3 and its OOD accuracy there too as"
    assert reach in sentence and "ordinary steps 12: " in sentence
