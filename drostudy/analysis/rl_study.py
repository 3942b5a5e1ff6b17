"""Notebook 04's tables and sentences: RL training curves, gains over the reference policy, over-optimisation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from drostudy.analysis.results import mean_pm, t_interval

HISTORY_METRICS = {
    "rewards/learned_reward/mean": "learned_reward",
    "samples/correct": "correct",
    "kl": "kl",
}


def history_frame(runs: Sequence[dict]):
    """Training curves of RL runs (metrics dicts) as a long DataFrame: method, seed, step, metric, value.

    metric: learned_reward (mean reward-model score of the sampled completions), correct (their
    reference-graded correctness) and kl (TRL's per-token KL to the reference), from each run's history.
    """
    import pandas as pd

    rows = [
        {
            "method": run["method"],
            "seed": run["seed"],
            "step": entry["step"],
            "metric": name,
            "value": entry[key],
        }
        for run in runs
        for entry in run["history"]
        for key, name in HISTORY_METRICS.items()
        if key in entry
    ]
    return pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])


def gains(runs: Sequence[dict]):
    """Per run and domain: change from the reference policy in learned reward and in correctness.

    Returns a DataFrame (method, seed, domain, in_distribution, reward_gain, correct_gain). Reward
    over-optimisation shows as a reward gain that brings no correctness gain (or a loss).
    """
    import pandas as pd

    rows = []
    for run in runs:
        train = set(run["config"]["train_domains"])
        for domain, s in run["per_domain"].items():
            rows.append({
                "method": run["method"], "seed": run["seed"], "domain": domain, "in_distribution": domain in train,
                "reward_gain": s["learned_reward"] - s["learned_reward_before"],
                "correct_gain": s["correct"] - s["correct_before"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def overoptimisation_text(gain_table) -> str:
    """One sentence per method and split (ID/OOD) from a `gains` table: mean gains over seeds (each seed's
    mean over the split's domains) with 95% t-intervals. Over-optimised means the learned reward rose
    beyond its interval while correctness did not rise; a reward change inside the seed noise is said so."""
    per_seed = gain_table.groupby(["method", "in_distribution", "seed"])[["reward_gain", "correct_gain"]]
    lines = []
    for (method, in_dist), part in per_seed.mean().groupby(level=[0, 1]):
        reward, reward_half = t_interval(part["reward_gain"].to_numpy())
        correct, correct_half = t_interval(part["correct_gain"].to_numpy())
        if math.isnan(reward_half):  # one seed: no interval
            verdict = ("over-optimised" if reward > 0 and correct <= 0 else "not over-optimised") + (
                " by the signs of one seed"
            )
        elif reward - reward_half <= 0:
            verdict = (
                "the learned reward did not rise beyond seed noise, so nothing to call over-optimisation"
            )
        else:
            verdict = "over-optimised" if correct <= 0 else "not over-optimised"
        where = "in distribution" if in_dist else "out of distribution"
        lines.append(
            f"{method}, {where}: learned reward {mean_pm(reward, reward_half, '+.3f')}, reference-graded correctness "
            f"{mean_pm(correct, correct_half, '+.3f')} vs the reference policy ({verdict})."
        )
    return "\n".join(lines)
