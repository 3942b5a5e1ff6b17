"""drostudy.analysis.tidy and .results: tidy rows from the metrics layout, collection from files,
t-intervals, the comparison."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from drostudy.analysis.results import (
    compare_to_ordinary,
    conclusion_text,
    id_ood,
    label_colors,
    select_metric,
    summary,
    t_interval,
)
from drostudy.analysis.tidy import collect, stage_per_sweep, tidy
from drostudy.io import atomic_write_json


def metrics(method="ordinary", radius=0.0, seed=0, acc=(0.8, 0.6, 0.5), divergence="tv"):
    """A metrics dict in the drostudy/runs.py layout: train on chat, evaluate on math and code too."""
    return {
        "stage": "rm",
        "method": method,
        "config": {
            "divergence": divergence,
            "radius": radius,
            "seed": seed,
            "train_domains": ("chat",),
            "eval_domains": ["math", "code"],
        },
        "per_domain": {
            "chat": {"accuracy": acc[0], "loss": 0.5, "note": "text is dropped"},
            "math": {"accuracy": acc[1], "loss": 0.7},
            "code": {"accuracy": acc[2], "loss": 0.9},
        },
        "in_distribution": {"accuracy": acc[0]},
        "out_of_distribution": {"accuracy": (acc[1] + acc[2]) / 2},
        "timings": {"total_s": 1.0},
        "history": [],
    }


def test_tidy_one_row_per_domain_and_numeric_metric():
    rows = tidy(metrics(method="robust", radius=0.1, seed=3), run_dir="runs/x")
    assert len(rows) == 6  # 3 domains x (accuracy, loss); the string metric is left out
    chat = [r for r in rows if r["domain"] == "chat" and r["metric"] == "accuracy"][0]
    assert chat["in_distribution"] is True and chat["value"] == 0.8
    assert {r["domain"] for r in rows if not r["in_distribution"]} == {"math", "code"}
    assert (chat["stage"], chat["method"], chat["divergence"], chat["radius"], chat["seed"]) == (
        "rm",
        "robust",
        "tv",
        0.1,
        3,
    )
    assert chat["train_domains"] == "chat" and chat["eval_domains"] == "math,code"
    assert chat["run_dir"] == "runs/x"


def test_tidy_prefers_top_level_keys_and_accepts_comma_strings():
    m = metrics()
    m["radius"] = 0.5
    m["config"]["train_domains"] = "chat,math"
    rows = tidy(m)
    assert all(r["radius"] == 0.5 for r in rows)
    assert {r["domain"] for r in rows if r["in_distribution"]} == {"chat", "math"}
    assert rows[0]["run_dir"] is None


def test_t_interval_matches_scipy():
    values = np.array([0.61, 0.65, 0.58, 0.70])
    mean, half = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (mean - half, mean + half) == pytest.approx((low, high))
    # by hand for two values: t_{0.975, 1} = 12.706..., sd = |a-b|/sqrt(2), n = 2
    _, half2 = t_interval(np.array([1.0, 2.0]))
    assert half2 == pytest.approx(12.7062047 * (1 / math.sqrt(2)) / math.sqrt(2), rel=1e-6)
    assert math.isnan(t_interval(np.array([1.0]))[1])


def test_collect_reads_metrics_and_notebook_results(tmp_path):
    atomic_write_json(tmp_path / "run_a" / "metrics.json", metrics(seed=0))
    atomic_write_json(
        tmp_path / "results" / "02_rm.json",
        {"runs": [metrics("robust", 0.1, s) for s in (0, 1)], "notes": "x"},
    )
    df = collect([tmp_path / "run_a" / "metrics.json", str(tmp_path / "results" / "0*_*.json")])
    assert len(df) == 3 * 6
    assert df["run"].nunique() == 3  # a run without run_dir is named by its file and index
    assert set(df[df["method"] == "ordinary"]["run_dir"]) == {str(tmp_path / "run_a")}
    assert collect(str(tmp_path / "nothing_*.json")).empty
    with pytest.raises(FileNotFoundError, match="missing.json"):
        collect(tmp_path / "missing.json")
    # a parquet table written from a collected frame reads back the same rows
    (tmp_path / "runs" / "grid").mkdir(parents=True)
    df.to_parquet(tmp_path / "runs" / "grid" / "results.parquet")
    both = collect([tmp_path / "results" / "02_rm.json", tmp_path / "runs" / "grid" / "results.parquet"])
    assert len(both) == 2 * 6 + len(df)
    # rows of a sweep table form a stage of their own; a notebook's rows keep theirs
    assert set(stage_per_sweep(both)) == {"rm", "rm @grid"}
    assert (stage_per_sweep(both) == "rm").sum() == 2 * 6


def test_summary_mean_and_ci_over_seeds():
    accs = [0.6, 0.7, 0.65]
    rows = [r for s, a in enumerate(accs) for r in tidy(metrics("robust", 0.1, s, (0.8, a, 0.5)))]
    table = summary(pd.DataFrame(rows))
    math_row = table[(table["domain"] == "math") & (table["metric"] == "accuracy")].iloc[0]
    low, high = stats.t.interval(0.95, 2, loc=np.mean(accs), scale=stats.sem(accs))
    assert math_row["n"] == 3 and math_row["mean"] == pytest.approx(np.mean(accs))
    assert (math_row["ci_low"], math_row["ci_high"]) == pytest.approx((low, high))
    assert len(table) == 3 * 2  # domains x metrics, one setting


def test_id_ood_and_comparison_with_ordinary():
    runs = [metrics("ordinary", 0.0, s, (0.9, 0.50 + 0.01 * s, 0.50)) for s in range(3)]
    runs += [metrics("robust", 0.1, s, (0.85, 0.60 + 0.01 * s, 0.60)) for s in range(3)]
    runs += [metrics("robust", 0.3, s, (0.80, 0.55, 0.55)) for s in range(3)]
    df = pd.DataFrame([r for i, m in enumerate(runs) for r in tidy(m, run_dir=f"r{i}")])
    per_run = id_ood(df)
    assert len(per_run) == 9
    assert per_run.set_index("run").loc["r3", "ood"] == pytest.approx(0.60)
    (rec,) = compare_to_ordinary(df)
    assert rec["best"]["radius"] == 0.1 and rec["best"]["method"] == "robust"
    assert rec["ood_gain"] == pytest.approx(0.10)
    assert rec["id_cost"] == pytest.approx(0.05)
    assert rec["ood_intervals_overlap"] is False
    text = conclusion_text([rec])
    assert "radius 0.1" in text and "+0.100" in text and "do not overlap" in text
    json.dumps(rec)  # recordable as is


def test_comparison_with_one_seed_has_no_interval_verdict():
    df = pd.DataFrame(
        tidy(metrics("ordinary"), "a") + tidy(metrics("robust", 0.1, acc=(0.7, 0.7, 0.7)), "b")
    )
    (rec,) = compare_to_ordinary(df)
    assert rec["ood_intervals_overlap"] is None
    assert "fewer than two seeds" in conclusion_text([rec])
    assert "no robust setting beats ordinary" not in conclusion_text([rec])  # 0.7 > 0.55 OOD
    (worse,) = compare_to_ordinary(df.assign(value=df["value"].where(df["run"] == "a", 0.1)))
    assert worse["ood_gain"] < 0 and "no robust setting beats ordinary" in conclusion_text([worse])
    assert compare_to_ordinary(df[df["method"] == "robust"]) == []


def test_label_colors_follow_the_divergence_palette():
    from drostudy.plotting import METHOD_COLORS

    colors = label_colors(["ordinary", "robust/tv", "robust/cvar"])
    assert colors == {
        "ordinary": METHOD_COLORS["ordinary"],
        "robust/tv": METHOD_COLORS["tv"],
        "robust/cvar": METHOD_COLORS["cvar"],
    }
    # two methods on one divergence would share a colour: fall back to distinct ones
    clash = label_colors(["robust/tv", "group/tv"])
    assert len(set(clash.values())) == 2


def test_each_stage_can_have_its_own_metric():
    rl = metrics("ordinary", seed=0)
    rl["stage"] = "rl"
    for values in rl["per_domain"].values():
        values["correct"] = values.pop("accuracy") / 2
    robust_rl = {**rl, "method": "robust", "config": {**rl["config"], "radius": 0.1}}
    df = pd.DataFrame(
        tidy(metrics(), "a") + tidy(metrics("robust", 0.1), "b") + tidy(rl, "c") + tidy(robust_rl, "d")
    )
    chosen = select_metric(df, {"rm": "accuracy", "rl": "correct"})
    assert set(zip(chosen["stage"], chosen["metric"], strict=True)) == {
        ("rm", "accuracy"),
        ("rl", "correct"),
    }
    assert set(select_metric(df, {"rl": "correct"})["stage"]) == {"rl"}
    records = compare_to_ordinary(df, {"rm": "accuracy", "rl": "correct"})
    assert {(r["stage"], r["metric"]) for r in records} == {("rm", "accuracy"), ("rl", "correct")}
    assert id_ood(df, {"rl": "correct"}).set_index("run").loc["c", "id"] == pytest.approx(0.4)
