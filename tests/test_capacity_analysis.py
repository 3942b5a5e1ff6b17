"""Notebook 06's reading of the capacity axis (drostudy.analysis.capacity) on constructed results: each
setting is compared with ordinary training at its own capacity, gains come back in capacity order, the
figure has a panel per stage, and the sentence says when the verdict changes sign."""

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import capacity, paired, stats

SEEDS = range(8)
NOISE = np.array([0.003, -0.002, 0.001, -0.003, 0.002, 0.0, -0.001, 0.0])  # zero mean


def _results(gain_by_capacity: dict[str, float], stage="rm A", metric="accuracy") -> pd.DataFrame:
    rows = []
    for cap_index, (cap, gain) in enumerate(gain_by_capacity.items()):
        for seed in SEEDS:
            base = 0.6 + 0.05 * cap_index + 0.01 * seed  # capacity and seed move both settings
            for setting, value in (("ordinary", base), ("tv 0.5", base + gain + NOISE[seed])):
                for split in ("id", "ood"):
                    rows.append(
                        (capacity.capacity_stage(stage, cap), setting, seed, split, "x", metric, value)
                    )
    return stats.add_domain_mean(pd.DataFrame(rows, columns=list(stats.RESULT_COLUMNS)))


def test_gains_compare_within_each_capacity_and_keep_its_order():
    points = {"0 trainable blocks": 0.0, "2 trainable blocks": -0.03, "1 trainable block": 0.02}
    comparisons = stats.comparisons_table(_results(points))
    assert sorted(capacity.gains(comparisons).capacity) == sorted(points)
    table = capacity.gains(comparisons, {"rm A": list(points)})
    assert list(table.capacity) == list(points)  # the plan's order, not the names'
    assert table.mean_diff.to_numpy() == pytest.approx(list(points.values()), abs=1e-12)
    assert list(table.verdict) == ["not resolved", "worse", "better"]
    sentence = capacity.stage_sentence(table, "rm A", "tv 0.5", 0.02)
    assert "the verdict changes sign with capacity" in sentence and "every point" in sentence
    dims = {"dim 32": 0.02, "dim 128": 0.01}
    same = capacity.gains(stats.comparisons_table(_results(dims, "t", "correct")), {"t": list(dims)})
    assert "better wherever resolved" in capacity.stage_sentence(same, "t", "tv 0.5", 0.001)
    assert "half-width above 0.001 at ['dim 32', 'dim 128']" in capacity.stage_sentence(
        same, "t", "tv 0.5", 0.001
    )


def test_figure_has_a_panel_per_stage_and_bad_names_raise():
    both = pd.concat([_results({"a": 0.01, "b": 0.0}), _results({"c": 0.02}, "dpo")])
    table = capacity.gains(stats.comparisons_table(both))
    fig = capacity.gains_figure(table, {"dpo": "DPO"})
    assert len(fig.data) == 2 and [a.text for a in fig.layout.annotations][:2] == ["DPO", "rm A"]
    with pytest.raises(ValueError, match="names no capacity point"):
        capacity.split_stage("rm A")
    with pytest.raises(ValueError, match="stage and capacity must be non-empty"):
        capacity.capacity_stage("rm A", "")
    with pytest.raises(ValueError, match="no gains of setting"):
        capacity.stage_sentence(table, "rm A", "kl 0.1", 0.02)


def test_seeds_needed_meets_the_half_width_and_paired_sd_inverts_it():
    from scipy.stats import t

    n = paired.seeds_needed(0.02, 0.01)
    assert t.ppf(0.975, n - 1) * 0.02 / n**0.5 <= 0.01 < t.ppf(0.975, n - 2) * 0.02 / (n - 1) ** 0.5
    half = t.ppf(0.975, 9) * 0.03 / 10**0.5  # the half-width of sd 0.03 over 10 seeds
    assert paired.paired_sd(half, 10) == pytest.approx(0.03, rel=1e-12)
    assert paired.seeds_needed(1.0, 1e-6, most=50) == 50


def test_a_stage_run_alone_replaces_its_own_rows_whole_and_keeps_the_others():
    first = stats.comparisons_table(
        pd.concat(
            [
                _results({"0 trainable blocks": 0.01}),
                _results({"0 trainable blocks": 0.0}, "rm C"),
                _results({"dim 32": 0.02}, "rl_testbed", "correct"),
            ]
        )
    )
    rerun = stats.comparisons_table(_results({"dim 32": -0.02, "dim 128": 0.0}, "rl_testbed", "correct"))
    merged = capacity.merge_stages(rerun, first, ["testbed"])
    assert tuple(merged.columns) == stats.COLUMNS
    testbed = merged[[capacity.notebook_stage(s) == "testbed" for s in merged.stage]]
    pd.testing.assert_frame_equal(testbed.reset_index(drop=True), rerun[list(stats.COLUMNS)])
    reward = merged[[capacity.notebook_stage(s) == "reward" for s in merged.stage]]
    kept = first[[capacity.notebook_stage(s) == "reward" for s in first.stage]]
    pd.testing.assert_frame_equal(reward.reset_index(drop=True), kept.reset_index(drop=True))
    assert len(merged) == len(rerun) + len(kept)  # the first run's testbed rows are gone, not mixed in
    assert capacity.merge_stages(rerun, first.iloc[:0], ["testbed"]).equals(rerun[list(stats.COLUMNS)])
    with pytest.raises(ValueError, match="rows of stages that did not run"):
        capacity.merge_stages(rerun, first, ["reward"])
    with pytest.raises(ValueError, match="unknown stages"):
        capacity.merge_stages(rerun, first, ["testbed", "ppo"])
    with pytest.raises(ValueError, match="belongs to none"):
        capacity.notebook_stage(capacity.capacity_stage("grpo", "x"))


def test_the_previous_run_is_read_only_in_the_same_mode(tmp_path):
    from drostudy.analysis.records import write_record

    path = tmp_path / "06_capacity.json"
    assert capacity.previous_run(path, "default") == {}
    write_record(path, {"parameters": {"MODE": "smoke"}, "stage_runs": {"testbed": {}}})
    assert capacity.previous_run(path, "default") == {}
    assert capacity.previous_run(path, "smoke")["stage_runs"] == {"testbed": {}}


def test_previous_comparisons_come_from_the_csv_of_a_run_in_the_same_mode(tmp_path):
    csv = tmp_path / "06_capacity.comparisons.csv"
    assert capacity.previous_comparisons(csv, {"stage_runs": {}}).empty  # no CSV yet
    rows = stats.comparisons_table(_results({"dim 32": 0.02, "dim 128": 0.0}, "rl_testbed", "correct"))
    stats.write_comparisons(rows, csv)
    assert capacity.previous_comparisons(csv, {}).empty  # no earlier run in this mode: nothing carried
    carried = capacity.previous_comparisons(csv, {"stage_runs": {"testbed": {}}})
    assert tuple(carried.columns) == stats.COLUMNS and len(carried) == len(rows)
    pd.DataFrame({"stage": ["x"]}).to_csv(csv, index=False)
    with pytest.raises(ValueError, match="must have the columns"):
        capacity.previous_comparisons(csv, {"stage_runs": {}})


def test_run_seconds_count_each_run_as_it_was_trained():
    runs = [{"timings": {"total_s": 2.5}}, {"timings": {"total_s": 4.0, "train_s": 3.0}}, {}]
    assert capacity.run_seconds(runs) == 6.5 and capacity.run_seconds([]) == 0.0
