"""The over-optimisation verdicts of notebook 04 on hand-made gain tables: a learned-reward rise is only
called one when it clears the seed interval."""

import pandas as pd

from drostudy.analysis.rl_study import overoptimisation_text


def table(reward_gains, correct_gains, in_distribution=False):
    """One row per seed and domain: two domains per seed with the given per-seed gains."""
    return pd.DataFrame(
        {"method": "ordinary", "seed": seed, "domain": domain, "in_distribution": in_distribution,
         "reward_gain": r, "correct_gain": c}
        for seed, (r, c) in enumerate(zip(reward_gains, correct_gains, strict=True))
        for domain in ("reasoning", "safety")
    )  # fmt: skip


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
