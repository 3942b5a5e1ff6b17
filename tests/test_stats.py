"""drostudy.analysis.paired and .stats on constructed data: paired effects found or not, Holm and the MDE by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from drostudy.analysis.paired import holm, minimum_detectable_effect, paired_comparison
from drostudy.analysis.stats import (
    COLUMNS,
    add_domain_mean,
    comparisons_table,
    half_width,
    paired_comparisons,
    write_comparisons,
)

SEEDS = [0, 1, 2, 3, 4]
# Seed effects shared by every setting of a seed (the training subset, initialisation, test pairs): large
# next to the effects below, so only a paired analysis can see them.
SEED_EFFECT = np.array([0.04, -0.05, 0.01, 0.06, -0.03])
WOBBLE = np.array([0.002, -0.001, 0.0, -0.002, 0.001])  # zero mean: per-seed noise on the difference


def _runs(effects: dict[str, float], split="ood", domain="mean", metric="accuracy", stage="reward"):
    rows = []
    for setting, effect in {"ordinary": 0.0, **effects}.items():
        wobble = 0.0 if setting == "ordinary" else WOBBLE
        for seed, value in zip(SEEDS, 0.6 + SEED_EFFECT + effect + wobble, strict=True):
            rows.append(
                dict(
                    stage=stage,
                    setting=setting,
                    seed=seed,
                    split=split,
                    domain=domain,
                    metric=metric,
                    value=value,
                )
            )
    return pd.DataFrame(rows)


def _by_seed(results, setting):
    return results[results.setting == setting].set_index("seed")["value"]


def test_known_effects_are_better_worse_or_not_resolved():
    results = _runs({"tv_0.2": 0.02, "tv_0.5": -0.02, "kl_0.1": 0.0})
    table = comparisons_table(results)
    assert tuple(table.columns) == COLUMNS
    got = table.set_index("setting")
    assert got.loc["tv_0.2", "verdict"] == "better" and got.loc["tv_0.5", "verdict"] == "worse"
    assert got.loc["kl_0.1", "verdict"] == "not resolved"
    assert got.loc["tv_0.2", "mean_diff"] == pytest.approx(0.02, abs=1e-12)
    assert (got.n_seeds == 5).all() and (got.baseline == "ordinary").all()
    # the interval is the unadjusted t-interval on the per-seed differences
    sd = WOBBLE.std(ddof=1)
    half = stats.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert got.loc["tv_0.2", "ci_low"] == pytest.approx(0.02 - half, abs=1e-12)
    assert half_width(table).to_numpy() == pytest.approx(np.full(3, half), abs=1e-12)
    assert (half_width(table) <= 0.015).all()


def test_a_loss_metric_that_falls_is_better():
    table = comparisons_table(_runs({"chi2": -0.02}, metric="loss"), lower_is_better=["loss"])
    assert table.verdict.tolist() == ["better"]


def test_pairing_resolves_what_unpaired_intervals_cannot():
    results = _runs({"tv": 0.02})
    setting, base = _by_seed(results, "tv"), _by_seed(results, "ordinary")
    factor = stats.t.ppf(0.975, 4) / math.sqrt(5)
    unpaired = [
        (x.mean() - factor * x.std(ddof=1), x.mean() + factor * x.std(ddof=1)) for x in (setting, base)
    ]
    assert unpaired[0][0] < unpaired[1][1]  # the two separate intervals overlap
    paired = paired_comparison(setting, base)
    assert paired.ci_low > 0 and paired.p_value < 0.001


def test_p_values_and_holm_match_hand_computation():
    results = pd.concat(
        [
            _runs({"a": 0.004, "b": 0.0015, "c": -0.0012}),
            _runs({"a": 0.001}, domain="safety"),
        ]
    )
    table = paired_comparisons(results).set_index(["domain", "setting"])
    sd = WOBBLE.std(ddof=1)
    raw = {}
    for key, effect in [(("mean", "a"), 0.004), (("mean", "b"), 0.0015), (("mean", "c"), -0.0012)]:
        t = effect / (sd / math.sqrt(5))
        raw[key] = 2 * stats.t.sf(abs(t), 4)
        assert table.loc[key, "p_value"] == pytest.approx(raw[key], rel=1e-9)
    # Holm over the three settings on the "mean" endpoint: sorted p_a < p_b < p_c, multipliers 3, 2, 1
    pa, pb, pc = raw["mean", "a"], raw["mean", "b"], raw["mean", "c"]
    assert pa < pb < pc
    expected = {"a": min(1, 3 * pa), "b": max(min(1, 3 * pa), min(1, 2 * pb))}
    expected["c"] = max(expected["b"], min(1, pc))
    for setting, value in expected.items():
        assert table.loc[("mean", setting), "p_holm"] == pytest.approx(value, rel=1e-9)
    # "safety" is its own family of one: Holm leaves its p-value alone
    assert table.loc[("safety", "a"), "p_holm"] == table.loc[("safety", "a"), "p_value"]
    # one family for the whole table: four tests
    whole = paired_comparisons(results, family=()).set_index(["domain", "setting"])
    assert whole.loc[("mean", "a"), "p_holm"] == pytest.approx(min(1, 4 * pa), rel=1e-9)


def test_holm_on_a_small_example_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 with multipliers 4, 3, 2, 1, made monotone
    expected = [4 * 0.01, max(4 * 0.01, 3 * 0.03, 2 * 0.04), max(4 * 0.01, 3 * 0.03), 0.5]
    np.testing.assert_allclose(adjusted, expected, rtol=1e-15)
    assert holm([0.4, 0.9]).tolist() == [0.8, 0.9]
    assert holm([0.6, 0.7]).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("n", [2, 3, 5, 10, 40])
def test_mde_has_80_percent_power_by_the_noncentral_t(n):
    sd = 0.03
    mde = minimum_detectable_effect(sd, n)
    critical = stats.t.ppf(0.975, n - 1)
    nc = mde / (sd / math.sqrt(n))
    power = stats.nct.sf(critical, n - 1, nc) + stats.nct.sf(critical, n - 1, -nc)  # P(T < -c)
    assert power == pytest.approx(0.8, abs=1e-10)
    # the usual approximation ignores the noncentral t's skew: 16% low at 2 seeds, exact as n grows
    approx = (critical + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)
    assert abs(mde / approx - 1) < {2: 0.2, 3: 0.06, 5: 0.015, 10: 0.002, 40: 0.001}[n]
    assert minimum_detectable_effect(2 * sd, n) == pytest.approx(2 * mde, rel=1e-12)


def test_the_table_reports_the_mde_of_the_observed_spread():
    table = comparisons_table(_runs({"kl": 0.0}))
    assert table.mde[0] == pytest.approx(minimum_detectable_effect(WOBBLE.std(ddof=1), 5), rel=1e-12)
    assert table.mde[0] > 0.0 and table.verdict[0] == "not resolved"


def test_unpaired_seeds_are_dropped_with_a_warning():
    results = _runs({"tv": 0.02})
    results = results[~((results.setting == "tv") & (results.seed == 4))]
    with pytest.warns(UserWarning, match="unpaired seeds \\[4\\]"):
        table = comparisons_table(results)
    assert table.n_seeds.tolist() == [4]


def test_identical_differences_are_resolved_by_sign():
    base = pd.Series([0.5, 0.6, 0.7])
    better = paired_comparison(base + 0.01, base)
    assert better.p_value == 0.0 and better.ci_low == better.ci_high and better.mde == 0.0
    assert paired_comparison(base, base).p_value == 1.0


def test_add_domain_mean_and_write_round_trip(tmp_path):
    results = pd.concat([_runs({"tv": 0.02}, domain="safety"), _runs({"tv": 0.0}, domain="code")])
    with_mean = add_domain_mean(results)
    means = with_mean[with_mean.domain == "mean"].set_index(["setting", "seed"])["value"]
    assert means.loc[("tv", 0)] == pytest.approx(0.6 + SEED_EFFECT[0] + 0.01 + WOBBLE[0], abs=1e-12)
    table = comparisons_table(with_mean)
    assert sorted(table.domain) == ["code", "mean", "safety"]
    path = write_comparisons(table, tmp_path / "results" / "02_reward_models.comparisons.csv")
    back = pd.read_csv(path)
    assert tuple(back.columns) == COLUMNS and back.verdict.tolist() == table.verdict.tolist()
    np.testing.assert_allclose(back.mean_diff, table.mean_diff, rtol=1e-15)


# ---- bad input -------------------------------------------------------------------------------------

GOOD = _runs({"tv": 0.02})
BAD_CALLS = [
    (lambda: comparisons_table(GOOD.assign(split="test")), "split"),
    (lambda: comparisons_table(GOOD[GOOD.seed == 0]), "results.*at least 2 seeds"),
    (lambda: comparisons_table(GOOD, baseline="erm"), "baseline"),
    (lambda: comparisons_table(GOOD[GOOD.setting == "tv"]), "baseline"),
    (lambda: comparisons_table(GOOD.drop(columns="seed")), "results"),
    (lambda: comparisons_table(pd.concat([GOOD, GOOD])), "results"),
    (lambda: comparisons_table(GOOD[GOOD.setting == "ordinary"]), "results"),
    (lambda: comparisons_table(GOOD, family=["seed"]), "family"),
    (lambda: comparisons_table(GOOD, alpha=1.5), "alpha"),
    (lambda: minimum_detectable_effect(0.1, 1), "n"),
    (lambda: minimum_detectable_effect(-0.1, 5), "sd"),
    (lambda: minimum_detectable_effect(0.1, 5, power=1.0), "power"),
    (lambda: holm([0.1, 1.2]), "p_values"),
    (lambda: paired_comparison([0.1, 0.2], pd.Series([0.1, 0.2])), "setting"),
    (lambda: write_comparisons(comparisons_table(GOOD), "results/reward.csv"), "path"),
    (
        lambda: write_comparisons(comparisons_table(GOOD).drop(columns="mde"), "02_x.comparisons.csv"),
        "table",
    ),
]


@pytest.mark.parametrize("call,argument", BAD_CALLS)
def test_bad_input_raises_value_error_naming_the_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
