"""Notebook 04's matched testbed comparisons (drostudy.analysis.testbed_matched) on constructed results:
ordinary's beta curve, a robust setting on it and one above it, the reference policy beside them."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import testbed_matched
from drostudy.analysis.stats import COLUMNS

BETAS = {"ordinary": 0.1, "ordinary beta 0.4": 0.4, "ordinary beta 1.6": 1.6}


def _results(seeds: int = 6) -> pd.DataFrame:
    """ID correctness falls and OOD correctness rises with beta (linearly in ID correctness); KL falls.
    "on curve" sits on ordinary's curve, "above" 0.01 above it at the same ID correctness; the
    reference policy (ID 0.30, OOD 0.29) is below every trained setting in ID, above ordinary in OOD."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        shift = rng.normal(0, 0.002)

        def add(setting, id_correct, ood_correct, kl, seed=seed):
            values = {("correct", "id"): id_correct, ("correct", "ood"): ood_correct}
            values |= {("kl", "id"): kl, ("kl", "ood"): kl}
            for (metric, split), value in values.items():
                rows.append(("rl_testbed", setting, seed, split, "mean", metric, value))

        for setting, beta in BETAS.items():
            id_correct = 0.38 - 0.02 * np.log2(beta / 0.1) / 2 + shift
            add(setting, id_correct, 0.65 - id_correct + rng.normal(0, 0.001), 1.0 / (1 + beta))
        on = 0.37 + shift
        add("on curve", on, None, 0.85)
        add("above", on, None, 0.85)
        add("reference", 0.30, 0.29, 0.0)
    table = pd.DataFrame(
        rows, columns=["stage", "setting", "seed", "split", "domain", "metric", "value"]
    )
    # the robust points' OOD correctness from ordinary's own (piecewise-linear in beta) curve
    wide = table.pivot_table(index="seed", columns=["setting", "metric", "split"], values="value")
    for seed in range(seeds):
        knob = [BETAS[s] for s in BETAS]
        xs = [wide.loc[seed, (s, "correct", "id")] for s in BETAS]
        ys = [wide.loc[seed, (s, "correct", "ood")] for s in BETAS]
        x = wide.loc[seed, ("on curve", "correct", "id")]
        k = np.interp(-x, [-v for v in xs], knob)
        level = np.interp(k, knob, ys)
        for setting, extra in (("on curve", 0.0), ("above", 0.01)):
            hit = (
                (table.seed == seed)
                & (table.setting == setting)
                & (table.metric == "correct")
                & (table.split == "ood")
            )
            table.loc[hit, "value"] = level + extra
    return table


def test_matched_rows_name_both_baselines_and_leave_the_reference_out():
    results = _results()
    rows, diagnostics = testbed_matched.matched(results, BETAS)
    assert tuple(rows.columns) == COLUMNS
    assert set(rows.baseline) == {
        "ordinary matched on id correct (beta)",
        "ordinary matched on ood kl (beta)",
    }
    assert set(rows.setting) == {"on curve", "above"}  # not "reference"
    on_id = rows[(rows.baseline.str.contains("id correct"))].set_index("setting")
    assert on_id.loc["on curve", "mean_diff"] == pytest.approx(0.0, abs=1e-12)
    assert on_id.loc["above", "mean_diff"] == pytest.approx(0.01, abs=1e-9)
    assert on_id.loc["above", "verdict"] == "better" and (on_id.n_seeds == 6).all()
    assert (diagnostics.seeds_left_out == 0).all() and len(diagnostics) == 4


def test_matched_text_sets_plain_and_matched_gains_side_by_side():
    results = _results()
    matched, _ = testbed_matched.matched(results, BETAS)
    plain = matched.assign(baseline="ordinary")[matched.baseline.str.contains("id correct")]
    text, met = testbed_matched.matched_text(plain, matched, "above", 6, target=0.5)
    assert text.startswith("Matched primary (testbed): above vs ordinary matched on id correct (beta)")
    assert "survives the matched comparison" in text and met
    text, _ = testbed_matched.matched_text(plain, matched, "on curve", 6, target=0.5)
    assert "does not survive" in text
    table = testbed_matched.gains_table(plain, matched)
    assert list(table.index) == ["above", "on curve"] and table.shape[1] == 3


def test_below_reference_lists_only_settings_whose_interval_is_below_it():
    text = testbed_matched.below_reference_sentence(_results(), ["ordinary", "ordinary beta 1.6"])
    # ordinary: OOD 0.65 - 0.38 = 0.27 < 0.29; beta 1.6: 0.65 - 0.34 = 0.31 > 0.29
    assert "untrained): ordinary (paired" in text and "0.2900" in text


def test_frontier_curves_and_sentence():
    settings = [
        type("S", (), dict(name=n, divergence=d, radius=r))()
        for n, d, r in (("ordinary", "tv", 0.0), ("tv 0.2", "tv", 0.2), ("kl 0.5", "kl", 0.5))
    ]
    lines = testbed_matched.curves(BETAS, settings)
    assert lines == {
        "ordinary (beta)": BETAS,
        "tv (radius)": {"ordinary": 0.0, "tv 0.2": 0.2},
        "kl (radius)": {"ordinary": 0.0, "kl 0.5": 0.5},
    }
    results = _results()
    figures = testbed_matched.frontiers(
        results, {"ordinary (beta)": BETAS, "robust": {"ordinary": 0.0, "on curve": 1, "above": 2}}
    )
    sentence = testbed_matched.frontier_sentence(figures["id_ood_points"])
    gaps = dict(re.findall(r"(on curve|above) \w+ \(([+-][0-9.]+)\)", sentence))
    assert float(gaps["above"]) == pytest.approx(0.01, abs=1e-3)
    assert float(gaps["on curve"]) == pytest.approx(0.0, abs=1e-3)
    assert len(figures["id_ood"].data) == 2 and len(figures["kl_ood"].data) == 2
