"""Notebook 04's testbed part (drostudy.rl.testbed): its settings, the primary ball, the paired seeds, and
the functions that run them, each piece a resumable drostudy.rl.testbed_experiments.TestbedRun.

    plan = testbed_plan.build(sizes.testbed, "math,code", "tv", 0.2, radii="0.1,0.2,0.4", kl_radius=0.5,
                              betas="0.2,0.4,0.8,1.6", beta=0.1, batch_size=32, samples=4)
    train, test = testbed_plan.load(plan, "math,code", "reasoning,knowledge,safety")
    conv, optimum = testbed_plan.run_convergence(plan, folder, train, test)
    paired = testbed_plan.run_paired(plan, folder, train, test)   # every setting on every seed
    curves = testbed_plan.run_curves(plan, folder, train, test)   # ordinary and the primary, seed 0
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from drostudy.config import method_label, setting_label
from drostudy.rl.study import TestbedSizes, domains
from drostudy.rl.testbed import BanditConfig
from drostudy.rl.testbed_data import DataConfig, load_bandits
from drostudy.rl.testbed_experiments import Setting, TestbedRun, compute
from drostudy.runs import run_all
from drostudy.threads import torch_threads

BASELINE = "ordinary"  # the plain algorithm's setting, every comparison's baseline


@dataclasses.dataclass(frozen=True)
class TestbedPlan:
    """What the testbed part runs: the data, the algorithm, the settings and the paired seeds."""

    data: DataConfig
    """the real data behind the bandits (train domains, reference policy)"""
    bandit: BanditConfig
    """the minibatch algorithm at the primary ball (seed 0); every run replaces its ball and seed"""
    settings: tuple[Setting, ...]
    """every setting (name, divergence, radius, beta), the baseline (radius 0, the plan's beta) first, then
    the balls, then ordinary training at its other KL coefficients (its knob, `knobs`)"""
    primary: str
    """the primary setting's name, compared with the baseline on the OOD-mean expected correctness"""
    seeds: int
    """paired seeds: 0, 1, ..., seeds - 1"""
    per_domain: int
    """training prompts per train domain drawn by each seed"""
    convergence_batches: tuple[int, ...]
    """minibatch sizes of the convergence table"""


def testbed_settings(
    divergence: str,
    radius: float,
    radii: str | tuple[float, ...],
    kl_radius: float = 0.0,
    betas: str | tuple[float, ...] = (),
    beta: float = 0.1,
) -> tuple[Setting, ...]:
    """Every Setting: the baseline (`BASELINE`: the primary ball at radius 0, the plain algorithm, beta None:
    the config's), TV at every radius of `radii` (comma-separated or a tuple), a KL ball of `kl_radius`
    (0: none), and ordinary training at each KL coefficient of `betas` other than the default `beta`
    ("ordinary beta 0.4": its own beta), each named by drostudy.config.setting_label."""
    radii, betas = _floats(radii), _floats(betas)
    balls = [("tv", r) for r in radii] + ([("kl", float(kl_radius))] if kl_radius else [])
    knob = [
        Setting(setting_label("ordinary", beta=b), divergence, 0.0, b)
        for b in sorted(set(betas) - {float(beta)})
    ]
    return (
        Setting(BASELINE, divergence, 0.0),
        *(Setting(_name(div, r), div, r) for div, r in balls),
        *knob,
    )


def _floats(values: str | tuple[float, ...]) -> tuple[float, ...]:
    if isinstance(values, str):
        return tuple(float(v) for v in values.split(",") if v)
    return tuple(float(v) for v in values)


def knobs(plan: TestbedPlan) -> dict[str, float]:
    """Ordinary training's KL-coefficient curve: {setting: beta} of the baseline and every "ordinary beta"
    setting (drostudy.analysis.matched's `knobs`)."""
    return {
        s.name: plan.bandit.beta if s.beta is None else s.beta
        for s in plan.settings
        if s.name == BASELINE or s.name.startswith(BASELINE + " ")
    }


def compared(plan: TestbedPlan) -> list[str]:
    """The settings of the plain comparison family: the baseline and the balls (not the knob settings)."""
    knob = set(knobs(plan)) - {BASELINE}
    return [s.name for s in plan.settings if s.name not in knob]


def _name(divergence: str, radius: float) -> str:
    return setting_label(method_label(divergence, radius), divergence, radius)


def build(
    sizes: TestbedSizes,
    train_domains: str | tuple[str, ...],
    divergence: str,
    radius: float,
    radii: str | tuple[float, ...],
    kl_radius: float = 0.0,
    reference: str = "uniform",
    betas: str | tuple[float, ...] = (),
    **bandit_fields,
) -> TestbedPlan:
    """The testbed part of the notebook: `sizes`, the data (train domains, `reference` policy), the primary
    ball (`divergence`, `radius`: one of the settings), the exploratory balls (`radii`, `kl_radius`, as
    `testbed_settings`), ordinary training's KL coefficients (`betas`) and the other BanditConfig
    `bandit_fields` (beta, batch_size, samples)."""
    data = DataConfig(train_domains=domains(train_domains), reference=reference)
    bandit = BanditConfig(
        divergence=divergence,
        radius=radius,
        steps=sizes.steps,
        full_steps=sizes.full_steps,
        **bandit_fields,
    )
    settings = testbed_settings(divergence, radius, radii, kl_radius, betas, bandit.beta)
    primary = _name(divergence, radius)
    if primary not in {s.name for s in settings}:
        raise ValueError(f"the primary ball {primary!r} must be among the settings {settings}")
    return TestbedPlan(
        data, bandit, settings, primary, sizes.seeds, sizes.per_domain, sizes.convergence_batches
    )


def load(plan: TestbedPlan, train_domains, eval_domains):
    """(train, test) bandits of the plan's data: training prompts of the train domains, held-out prompts
    of every domain in `train_domains` + `eval_domains` (in that order)."""
    train, test, _ = load_bandits(plan.data, domains(train_domains) + domains(eval_domains))
    return train, test


def run_testbed(runs: list[tuple[str, TestbedRun]], folder, train, test, desc: str) -> list[dict]:
    """`run_all` the labelled testbed runs (resuming finished ones) on the loaded bandits, on one thread:
    the tensors are tiny float64 ones, where threads cost more than they bring."""
    with torch_threads(1):
        return run_all(runs, folder, lambda run: compute(run, train, test), desc=desc)


def rows(metrics: list[dict]) -> pd.DataFrame:
    """The concatenated rows of finished testbed runs."""
    return pd.concat([pd.DataFrame(m["rows"]) for m in metrics], ignore_index=True)


def run_convergence(plan: TestbedPlan, folder, train, test) -> tuple[pd.DataFrame, float]:
    """(gap table: batch_size, step, objective, gap; the full-batch robust optimum) at the primary ball."""
    run = TestbedRun("convergence", plan.bandit, plan.data, batch_sizes=plan.convergence_batches)
    (metrics,) = run_testbed([("convergence", run)], folder, train, test, "convergence")
    return rows([metrics]), metrics["optimum"]


def run_paired(plan: TestbedPlan, folder, train, test) -> pd.DataFrame:
    """Every setting on every seed, paired; the long table of drostudy.rl.testbed_experiments.paired_runs
    (with the reference policy's rows, setting "reference"). Per seed one resumable run of the baseline and
    the balls ("paired") and one of ordinary's other KL coefficients ("knob"), so that another beta grid
    reruns only the latter; the seed alone fixes the prompts, batch order and draws, so both are paired."""
    groups = {"paired": compared(plan)}
    groups["knob"] = [s.name for s in plan.settings if s.name not in groups["paired"]]
    runs = []
    for seed in range(plan.seeds):
        bandit = dataclasses.replace(plan.bandit, seed=seed)
        for label, names in groups.items():
            chosen = tuple(s for s in plan.settings if s.name in names)
            if chosen:
                run = TestbedRun(
                    "paired", bandit, plan.data, settings=chosen, per_domain=plan.per_domain
                )
                runs.append((label, run))
    table = rows(run_testbed(runs, folder, train, test, "paired seeds"))
    # the knob runs repeat the reference policy's rows: keep one copy per seed
    return table.drop_duplicates(["setting", "seed", "split", "domain", "metric"], ignore_index=True)


def run_curves(plan: TestbedPlan, folder, train, test) -> pd.DataFrame:
    """The training curves (seed 0) of the baseline and the primary setting: step, domain, metric, value,
    setting, split (id: a train domain, else ood)."""
    chosen = [s for s in plan.settings if s.name in (BASELINE, plan.primary)]
    runs = []
    for s in chosen:
        bandit = dataclasses.replace(plan.bandit, divergence=s.divergence, radius=s.radius)
        runs.append((f"curves {s.name}", TestbedRun("curves", bandit, plan.data)))
    metrics = run_testbed(runs, folder, train, test, "curves")
    curves = pd.concat([rows([m]).assign(setting=s.name) for s, m in zip(chosen, metrics, strict=True)])
    curves["split"] = curves.domain.map(lambda d: "id" if d in plan.data.train_domains else "ood")
    return curves
