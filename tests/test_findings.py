"""README findings generator: fills only the text between the markers, from a constructed comparisons CSV."""

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import findings, stats


def constructed_table():
    rng = np.random.default_rng(0)
    seeds = range(6)
    rows = []
    for setting, gain in (("ordinary", 0.0), ("robust tv 0.5", 0.04), ("group_robust tv 0.5", 0.0)):
        for seed in seeds:
            noise = rng.normal(0, 0.002)
            for split, domain, base in (
                ("ood", "reasoning", 0.6),
                ("ood", "safety", 0.5),
                ("id", "math", 0.8),
            ):
                value = (
                    base
                    + gain
                    + noise
                    + (0 if setting != "group_robust tv 0.5" else rng.normal(0, 0.01))
                )
                rows.append(
                    dict(
                        stage="rm A",
                        setting=setting,
                        seed=seed,
                        split=split,
                        domain=domain,
                        metric="accuracy",
                        value=value,
                    )
                )
                # a KL endpoint (lower is better, another scale): kept out of the findings table
                rows.append({**rows[-1], "metric": "kl", "value": 1.0 - value})
    return stats.comparisons_table(stats.add_domain_mean(pd.DataFrame(rows)), lower_is_better=("kl",))


def test_generator_replaces_only_the_marked_text(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    table = constructed_table()
    stats.write_comparisons(table, results / "02_reward_model_robustness.comparisons.csv")
    before = "# Project\n\nintro text\n\n## What the study found\n\n"
    after = "\n\n## Next section\n\nkept as is\n"
    readme = tmp_path / "README.md"
    readme.write_text(
        before + findings.FINDINGS_START + "\nold numbers 0.123\n" + findings.FINDINGS_END + after
    )

    text = findings.update_readme(readme, results)
    assert text == readme.read_text()
    assert text.startswith(before + findings.FINDINGS_START) and text.endswith(
        findings.FINDINGS_END + after
    )
    assert "old numbers" not in text
    ood_mean = table[(table.split == "ood") & (table.domain == "mean")]
    robust = ood_mean[(ood_mean.setting == "robust tv 0.5") & (ood_mean.metric == "accuracy")].iloc[0]
    assert "| kl |" not in text and (ood_mean.metric == "kl").any()
    row = f"| rm A | robust tv 0.5 | accuracy | 6 | {robust.mean_diff:+.3f} [{robust.ci_low:+.3f}, {robust.ci_high:+.3f}] |"
    assert row in text and robust.verdict == "better"
    assert "03_*.comparisons.csv missing" in text and "04_*.comparisons.csv missing" in text
    assert "Resolved: 1 better, 0 worse; 1 not resolved." in text
    assert findings.MAP_FIGURE in text and findings.MAP_FIGURE.replace(".html", ".png)") in text
    findings.update_readme(readme, results)  # idempotent
    assert readme.read_text() == text


def test_missing_markers_raise(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(findings.FINDINGS_END + " then " + findings.FINDINGS_START)
    with pytest.raises(ValueError, match="findings:start"):
        findings.update_readme(readme, tmp_path)


def test_no_results_says_so(tmp_path):
    table, missing = findings.load_comparisons(tmp_path)
    assert table.empty and len(missing) == 3
    assert "No comparisons recorded yet" in findings.findings_markdown(table, missing)


def test_gain_map_keeps_the_quality_metric_only():
    """05's map averages gains per series: a KL row (another scale and direction) must not enter it."""
    table = constructed_table()
    gains = findings.gain_map(table, {"rm A": 0.1})
    ood_mean = table[(table.split == "ood") & (table.domain == "mean")]
    assert set(ood_mean.metric) == {"accuracy", "kl"}
    assert set(gains.metric) == {"accuracy"} and len(gains) == (ood_mean.metric == "accuracy").sum()
    assert (gains.severity == 0.1).all()


def test_capacity_section_lists_each_point_in_plan_order_and_the_stages_left():
    gain = dict(metric="correct", n_seeds=20, mde=0.004, half_width=0.002)
    record = {
        "primary": {"rl_testbed": "tv 0.2"},
        "stage_runs": {
            "testbed": {"date": "2026-12-06T13:00:07+00:00", "runs": 1176, "seconds": 1290.1}
        },
        "gains": [
            gain
            | dict(
                stage="rl_testbed",
                capacity="dim 32",
                setting="tv 0.2",
                mean_diff=0.0179,
                ci_low=0.0153,
                ci_high=0.0205,
                verdict="better",
            ),
            gain
            | dict(
                stage="rl_testbed",
                capacity="dim 128",
                setting="group tv 0.2",
                mean_diff=-0.0031,
                ci_low=-0.0115,
                ci_high=0.0052,
                verdict="not resolved",
            ),
        ],
    }
    lines = findings.capacity_markdown(record)
    rows = [line for line in lines if line.startswith("| rl_testbed")]
    assert rows == [
        "| rl_testbed | dim 32 | tv 0.2 (primary) | 20 | +0.0179 [+0.0153, +0.0205] | 0.0020 | better |",
        "| rl_testbed | dim 128 | group tv 0.2 | 20 | -0.0031 [-0.0115, +0.0052] | 0.0020 | not resolved |",
    ]
    assert "testbed 1,176 runs, 21.5 min (2026-12-06)" in lines[0]  # a record without run_seconds
    record["stage_runs"]["testbed"] |= {"seconds": 3.0, "run_seconds": 1260.0}  # resumed: the runs' own
    assert (
        "testbed 1,176 runs, 21.0 min of training (2026-12-06)" in findings.capacity_markdown(record)[0]
    )
    assert "Not run yet at this size: dpo, reward (`make capacity STAGES=...`)." in lines
    assert findings.capacity_markdown({}) == []
    record["kl_travelled"] = [
        dict(stage="dpo · LoRA 4 layers, 6 steps", setting=s, kl_id=0.1, kl_ood=kl)
        for s, kl in (("ordinary", 0.1234), ("tv 0.2", 0.2))
    ]
    assert (
        "DPO's KL to the reference out of distribution (nats per response, seed mean): "
        "LoRA 4 layers, 6 steps: ordinary 0.123, tv 0.2 0.200." in findings.capacity_markdown(record)
    )
    text = findings.findings_markdown(constructed_table(), [], capacity=record)
    assert rows[0] in text and findings.CAPACITY_FIGURE in text
    assert findings.CAPACITY_FIGURE not in findings.findings_markdown(constructed_table(), [])
