"""Experiments on the exact testbed (drostudy.rl.testbed): paired seeds, convergence, training curves.

- `paired_runs`: every setting (a ball) on the same seeds, paired: per seed the same training prompts, the
  same init (theta = 0), the same batch order and draws; only the ball differs.
- `convergence_table`: the minibatch algorithm's gap to the full-batch robust optimum, per batch size.
- `training_curves`: the exact test metrics along training (reward over-optimisation shows there).
- `TestbedRun` and `compute`: one resumable piece of such work (drostudy.runs.run_all keys its folder on the
  run's fields), and the rows it computes on loaded bandits; drostudy.rl.study plans notebook 04's runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from drostudy.rl.testbed import (
    Bandit,
    BanditConfig,
    evaluate_policy,
    run_minibatch,
    solve_full,
)
from drostudy.rl.testbed_data import DataConfig

KINDS = ("paired", "convergence", "curves")
STAGE = "rl_testbed"  # the stage of the testbed's rows in a comparisons table


class Setting(NamedTuple):
    """One setting of the paired runs: its name, its ball and its KL coefficient."""

    name: str
    """the setting's name in every results table (drostudy.config.setting_label)"""
    divergence: str
    """the ball over prompt distributions (drostudy.weights)"""
    radius: float
    """the ball's size; 0: the plain algorithm"""
    beta: float | None = None
    """its own KL coefficient (ordinary training moved along its knob); None: the run's config's"""


def subsample(bandit: Bandit, per_domain: int | None, seed: int) -> Bandit:
    """At most `per_domain` prompts of every domain, drawn by `seed` (None: all), in a seeded order (drawn on
    the CPU by a CPU generator, the same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    domain, keep = bandit.domain.cpu(), []
    for index in range(len(bandit.domains)):
        member = torch.nonzero(domain == index).flatten()
        keep.append(member[torch.randperm(len(member), generator=generator)][:per_domain])
    return bandit.subset(torch.cat(keep).to(bandit.domain.device))


def paired_runs(
    train: Bandit,
    test: Bandit,
    config: BanditConfig,
    settings: dict[str, tuple],
    seeds: tuple[int, ...],
    per_domain: int | None = None,
) -> pd.DataFrame:
    """Every setting {name: (divergence, radius) or (divergence, radius, beta)} for every seed, paired: per
    seed the same training prompts (`per_domain` of each train domain, drawn by the seed), the same init
    (theta = 0) and the same batch order and draws; only the ball (and, where given and not None, the KL
    coefficient beta, else `config`'s) differs. Also the reference policy (setting "reference", theta = 0).

    Returns a long DataFrame: stage ("rl_testbed"), setting, seed, split ("id": a domain `train` holds
    prompts of, else "ood"), domain (and "mean": the unweighted mean over the split's domains), metric
    (correct, reward, kl, chosen: see `evaluate_policy`), value.
    """
    train_domains = {train.domains[i] for i in train.domain.unique().tolist()}
    frames = []
    for seed in seeds:
        prompts = subsample(train, per_domain, seed)
        runs = {"reference": train.phi.new_zeros(train.phi.shape[-1])}
        for name, (divergence, radius, *beta) in settings.items():
            own = {"beta": beta[0]} if beta and beta[0] is not None else {}
            run_config = dataclasses.replace(
                config, divergence=divergence, radius=radius, seed=seed, **own
            )
            runs[name], _ = run_minibatch(prompts, run_config)
        for name, theta in runs.items():
            table = evaluate_policy(theta, test)
            frames.append(table.assign(setting=name, seed=seed))
    table = pd.concat(frames, ignore_index=True)
    table["split"] = np.where(table["domain"].isin(train_domains), "id", "ood")
    keys = ["setting", "seed", "split", "metric"]
    means = table.groupby(keys, as_index=False)["value"].mean().assign(domain="mean")
    table = pd.concat([table, means], ignore_index=True).assign(stage=STAGE)
    return table[["stage", "setting", "seed", "split", "domain", "metric", "value"]]


def convergence_table(
    train: Bandit, config: BanditConfig, batch_sizes: tuple[int, ...], n_evals: int = 20
) -> tuple[pd.DataFrame, float]:
    """Gap F* - F(theta_t) of the minibatch algorithm to the full-batch robust optimum F*, for each batch
    size, at `n_evals` log-spaced steps; F is the robust objective of config's ball over every prompt of
    `train`. Returns (DataFrame: batch_size, step, objective, gap; F*). A gap below 0 means the
    minibatch iterate beat the full solver's local optimum.
    """
    _, optimum = solve_full(train, config)
    steps = tuple(np.unique(np.geomspace(1, config.steps, n_evals).round().astype(int)).tolist())
    rows = []
    for batch_size in batch_sizes:
        run_config = dataclasses.replace(config, batch_size=batch_size)
        _, history = run_minibatch(train, run_config, steps, (config.divergence, config.radius))
        rows += [
            {"batch_size": batch_size, "step": h["step"], "objective": h["objective"]} for h in history
        ]
    table = pd.DataFrame(rows)
    table["gap"] = optimum - table["objective"]
    return table, optimum


def training_curves(
    train: Bandit, test: Bandit, config: BanditConfig, n_evals: int = 12
) -> pd.DataFrame:
    """The exact test metrics of the minibatch iterate at `n_evals` log-spaced steps (step 0: pi_ref), so
    reward over-optimisation shows: learned reward rising while graded correctness falls.

    Returns a DataFrame (step, domain, metric, value) with `evaluate_policy`'s metrics.
    """
    steps = tuple(np.unique(np.geomspace(1, config.steps, n_evals).round().astype(int)).tolist())
    _, history = run_minibatch(train, config, steps)
    zero = {"step": 0, "theta": train.phi.new_zeros(train.phi.shape[-1])}
    frames = [evaluate_policy(h["theta"], test).assign(step=h["step"]) for h in [zero, *history]]
    return pd.concat(frames, ignore_index=True)[["step", "domain", "metric", "value"]]


@dataclass(frozen=True)
class TestbedRun:
    """One resumable piece of the testbed study."""

    kind: str
    """paired (every setting on one seed), convergence (gap to the full-batch optimum) or curves"""
    bandit: BanditConfig
    """the minibatch algorithm's config (its seed is the run's seed; curves and convergence: its ball)"""
    data: DataConfig = DataConfig()
    """the real data behind the bandits (recorded so that another data config gets another folder)"""
    settings: tuple[Setting, ...] = ()
    """paired: every setting (name, divergence, radius, beta); the baseline is radius 0 at the config's beta"""
    per_domain: int | None = None
    """paired: training prompts per train domain drawn by the seed (None: all)"""
    batch_sizes: tuple[int, ...] = ()
    """convergence: the minibatch sizes compared"""
    n_evals: int = 12
    """convergence and curves: log-spaced evaluation steps"""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}; got {self.kind!r}")

    @property
    def seed(self) -> int:
        return self.bandit.seed


def compute(run: TestbedRun, train: Bandit, test: Bandit) -> dict:
    """The rows of one `TestbedRun` on the loaded bandits: {"stage", "kind", "rows"} (and "optimum" for
    convergence)."""
    if run.kind == "paired":
        chosen = [Setting(*s) for s in run.settings]  # tuples read back from a record too
        settings = {s.name: (s.divergence, s.radius, s.beta) for s in chosen}
        table = paired_runs(train, test, run.bandit, settings, (run.seed,), run.per_domain)
        extra = {}
    elif run.kind == "convergence":
        table, optimum = convergence_table(train, run.bandit, run.batch_sizes, run.n_evals)
        extra = {"optimum": optimum}
    else:
        table, extra = training_curves(train, test, run.bandit, run.n_evals), {}
    return {"stage": STAGE, "kind": run.kind, "rows": table.to_dict("records"), **extra}
