"""Notebook 04's analysis on hand-made results: the over-optimisation verdicts (a learned-reward rise is only
called one when it clears the seed interval), the LLM runs' settings, and the findings in Markdown."""

import pandas as pd
import pytest

from drostudy.analysis import testbed_study
from drostudy.analysis.rl_study import (
    findings_markdown,
    llm_results,
    markdown_table,
    overoptimisation_text,
)
from drostudy.analysis.stats import comparisons_table


def table(reward_gains, correct_gains, in_distribution=False):
    """One row per seed and domain: two domains per seed with the given per-seed gains."""
    return pd.DataFrame(
        {
            "method": "ordinary",
            "seed": seed,
            "domain": domain,
            "in_distribution": in_distribution,
            "reward_gain": r,
            "correct_gain": c,
        }
        for seed, (r, c) in enumerate(zip(reward_gains, correct_gains, strict=True))
        for domain in ("reasoning", "safety")
    )


def test_a_clear_reward_rise_without_correctness_is_over_optimisation():
    text = overoptimisation_text(table([0.30, 0.32, 0.31], [-0.05, 0.0, -0.02]))
    assert "ordinary, out of distribution: learned reward +0.310 ±" in text
    assert "(over-optimised)" in text


def test_a_reward_change_inside_the_seed_noise_is_not_called_anything():
    text = overoptimisation_text(table([0.05, -0.04, 0.01], [-0.1, -0.2, 0.0]))
    assert "did not rise beyond seed noise" in text and "(over-optimised)" not in text


def test_a_reward_rise_with_better_answers_is_not_over_optimisation():
    text = overoptimisation_text(table([0.30, 0.32, 0.31], [0.1, 0.2, 0.15], in_distribution=True))
    assert "ordinary, in distribution" in text and "(not over-optimised)" in text


def test_one_seed_falls_back_to_the_signs():
    assert "over-optimised by the signs of one seed" in overoptimisation_text(table([0.3], [-0.1]))


def llm_record(method, radius, seed, correct):
    """A finished RLOO run's metrics: trained on math, evaluated on math and safety."""
    per_domain = {
        d: {"learned_reward": 0.5, "correct": correct + (d == "math") * 0.1, "kl": 0.01}
        for d in ("math", "safety")
    }
    config = {"divergence": "tv", "radius": radius, "train_domains": ["math"]}
    return {"method": method, "seed": seed, "config": config, "per_domain": per_domain}


def test_llm_results_name_settings_as_every_results_table():
    records = [llm_record("ordinary", 0.0, 0, 0.2), llm_record("robust", 0.2, 0, 0.3)]
    results = llm_results(records)
    assert set(results.setting) == {"ordinary", "tv 0.2"} and set(results.stage) == {"rl_llm"}
    ood = results[
        (results.setting == "tv 0.2") & (results.split == "ood") & (results.metric == "correct")
    ]
    assert set(ood.domain) == {"safety", "mean"} and ood.value.tolist() == pytest.approx([0.3, 0.3])


def test_findings_markdown_is_built_from_the_numbers():
    rows = [
        dict(stage="rl_testbed", setting=setting, seed=seed, split=split, domain="mean", metric=metric)
        | dict(value=seed * 0.01 + (setting == "tv 0.2") * 0.05 * (split == "ood"))
        for setting in ("ordinary", "tv 0.2")
        for seed in range(4)
        for split in ("id", "ood")
        for metric in ("correct", "kl")
    ]
    comparisons = comparisons_table(pd.DataFrame(rows), "ordinary", lower_is_better=("kl",))
    exploratory = testbed_study.exploratory_table(comparisons, "rl_testbed")
    assert list(exploratory.index) == ["tv 0.2"]
    assert exploratory.loc["tv 0.2", "ood correct"].startswith("+0.0500 ± 0.0000 (better)")
    text = findings_markdown(
        "Primary: a sentence.", exploratory, ["A sentence."], "one\ntwo", {"all": 3.4}
    )
    assert text.startswith("**Primary: a sentence.**")
    assert "| setting - ordinary | ood correct | id correct | ood kl |" in text
    assert "| tv 0.2 | +0.0500 ± 0.0000 (better) |" in text
    assert "- one\n- two" in text and text.endswith("Times: all 3 s (this machine).")


def test_markdown_table_leaves_missing_cells_empty():
    table = pd.DataFrame({"a": [1, None]}, index=pd.Index(["x", "y"], name="row"))
    assert markdown_table(table) == "| row | a |\n|---|---|\n| x | 1.0 |\n| y |  |"
