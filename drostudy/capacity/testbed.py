"""Capacity axis of the RL testbed (issue #25): notebook 04's paired testbed with a richer policy and
longer training, at the headline settings only.

A capacity point is (policy feature dimension `dim`, minibatch `steps`). The policy features phi are the
reward features psi = [e_r, e_p * e_r] (FULL_WIDTH = 768 columns) projected on their top `dim` principal
directions (drostudy.rl.testbed_data), so 32 is notebook 04's policy and 768 is all of psi. At the full
width the learned reward is linear in phi, so with a uniform reference every prompt's KL-regularised
optimum is the same theta (the reward head in phi's basis, over beta): a reweighting of the prompts then
changes where training ends only through the path it takes there (the whitened trailing directions, of
little variance on the training candidates, spread wider on the held-out ones: the seeds disagree more).

Settings per point, on the same paired seeds (a seed fixes the training prompts, the batch order and the
draws at every capacity point and in every setting): `ordinary`, the primary ball over the batch's prompts
(`tv 0.2`, notebook 04's primary) and the same ball over the batch's train domains (`group tv 0.2`, the
reward stage's group level, which notebook 04's testbed does not run: `run_group_minibatch` is its
minibatch algorithm, notebook 04's with the worst case taken over the domain mix of each batch). Every run
also evaluates the reference policy pi_ref (setting "reference"), so `reference_table` says at each
capacity whether a setting ends below it out of distribution.

    sizes = capacity.testbed.pick(SMOKE, seeds=SEEDS)
    configs = capacity.testbed.plan(sizes)
    runs = capacity.testbed.run(configs, folder)
    table = comparisons_table(capacity.testbed.results(runs), "ordinary", lower_is_better=("kl",))
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from drostudy.analysis.capacity import capacity_stage
from drostudy.analysis.paired import paired_comparison
from drostudy.analysis.stats import RESULT_COLUMNS
from drostudy.config import pick_sizes, setting_label
from drostudy.rl.study import domains
from drostudy.rl.testbed import Bandit, BanditConfig, _advantages, evaluate_policy, run_minibatch
from drostudy.rl.testbed_data import DataConfig, load_bandits
from drostudy.rl.testbed_experiments import STAGE, Setting, TestbedRun, compute, subsample
from drostudy.runs import run_all
from drostudy.threads import torch_threads
from drostudy.weights import ball_is_point, group_worst_case_weights

FULL_WIDTH = 768  # columns of psi = [e_r, e_p * e_r]: two MiniLM-L6 embeddings of 384
LEVELS = ("example", "group")  # the ball over the batch's prompts, or over its train domains
REFERENCE = "reference"  # the untrained policy pi_ref (theta = 0), in every run's rows


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The testbed's capacity axis in one mode (PRESETS): the capacity points, the settings, the seeds."""

    seeds: int
    """paired seeds 0, 1, ..., seeds - 1 at every capacity point and setting"""
    dim_seeds: dict[int, int]
    """paired seeds at a dim named here (at least `seeds`); any other dim runs `seeds`: wider ones spread more"""
    dims: tuple[int, ...]
    """policy feature dimensions (top principal directions of psi; FULL_WIDTH: all of it)"""
    steps: tuple[int, ...]
    """minibatch steps; every dim runs at every step count"""
    per_domain: int
    """training prompts per train domain drawn by each seed (notebook 04's PER_DOMAIN)"""
    divergence: str
    """the primary ball (notebook 04's DIVERGENCE)"""
    radius: float
    """the primary radius (notebook 04's RADIUS), at both levels"""
    levels: tuple[str, ...]
    """where the ball runs besides ordinary: example (over prompts, notebook 04), group (over domains)"""

    def seeds_at(self, dim: int) -> int:
        """The paired seeds at policy dimension `dim`: its dim_seeds, at least `seeds`."""
        return max(self.seeds, self.dim_seeds.get(dim, 0))


# dim_seeds: the seeds each dim's 95% half-width needs to reach 0.01 for both balls, from the spread of 20
# seeds measured by benchmarks/bench_capacity_testbed.py (sd of the paired OOD-mean difference: dim 32
# 0.003-0.006, dim 128 0.012-0.033, dim 768 0.043-0.056; 4, 45 and 125 seeds). Dim 128 then spread wider
# on its 48: sd 0.038 for TV 0.2 at 200 steps (half-width 0.0110), which needs 58 seeds; 72 leave room for
# the sd to grow again. The count comes from the spread alone, fixed before the new seeds ran.
_DEFAULT = Sizes(
    seeds=20,
    dim_seeds={128: 72, FULL_WIDTH: 128},
    dims=(32, 128, FULL_WIDTH),
    steps=(200, 800),
    per_domain=300,
    divergence="tv",
    radius=0.2,
    levels=LEVELS,
)
PRESETS = {
    "smoke": Sizes(2, {}, (32, FULL_WIDTH), (20,), 40, "tv", 0.2, LEVELS),
    "default": _DEFAULT,
    "full": _DEFAULT,  # the testbed runs on the CPU in every mode
}


def pick(smoke: bool, full: bool = False, **overrides) -> Sizes:
    """The mode's Sizes with every override that is not None (drostudy.config.pick_sizes)."""
    return pick_sizes(PRESETS, smoke, full, **overrides)


@dataclasses.dataclass(frozen=True)
class CapacityRun:
    """One setting on one seed at one capacity point: notebook 04's paired testbed run and its ball's level."""

    run: TestbedRun
    """kind paired, one setting; run.data.dim and run.bandit.steps are the capacity point"""
    level: str = "example"
    """example: notebook 04's algorithm; group: the ball over each batch's train domains"""
    eval_domains: tuple[str, ...] = ("reasoning", "knowledge", "safety")
    """held-out domains evaluated besides the train domains (out of distribution)"""

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {list(LEVELS)}; got {self.level!r}")

    @property
    def seed(self) -> int:
        return self.run.seed


def settings(sizes: Sizes) -> list[tuple[Setting, str]]:
    """(Setting, level) of every setting: ordinary (radius 0), then the primary ball at each level."""
    ball = (sizes.divergence, sizes.radius)
    names = {lv: setting_label("robust" if lv == "example" else lv, *ball) for lv in sizes.levels}
    balls = [(Setting(names[lv], *ball), lv) for lv in sizes.levels]
    return [(Setting(setting_label("ordinary"), sizes.divergence, 0.0), "example"), *balls]


def plan(
    sizes: Sizes,
    train_domains: str = "math,code",
    eval_domains: str = "reasoning,knowledge,safety",
    **bandit_fields,
) -> list[tuple[str, CapacityRun]]:
    """(setting label, CapacityRun) for every seed x dim x steps x setting, seeds outermost (a dim runs its
    `sizes.seeds_at(dim)` seeds: the first seeds of a wider dim are the other dims' seeds). The minibatch
    algorithm is notebook 04's (BanditConfig defaults: beta 0.1, batch_size 32, samples 4; `bandit_fields`
    override them), so dim 32 at 200 steps reproduces notebook 04's runs of these settings."""
    out, ball = [], dict(divergence=sizes.divergence, radius=sizes.radius) | bandit_fields
    for seed in range(max(map(sizes.seeds_at, sizes.dims))):
        for dim in [d for d in sizes.dims if seed < sizes.seeds_at(d)]:
            data = DataConfig(train_domains=domains(train_domains), dim=dim)
            for steps in sizes.steps:
                bandit = BanditConfig(steps=steps, seed=seed, **ball)
                for setting, level in settings(sizes):
                    run = TestbedRun("paired", bandit, data, (setting,), sizes.per_domain)
                    out.append((setting.name, CapacityRun(run, level, domains(eval_domains))))
    return out


def _point(config) -> tuple[int, int]:
    """(dim, steps) of a CapacityRun or of its dict in a finished run's metrics."""
    if isinstance(config, CapacityRun):
        return config.run.data.dim, config.run.bandit.steps
    return int(config["run"]["data"]["dim"]), int(config["run"]["bandit"]["steps"])


def capacity(config) -> str:
    """The capacity point's name: "dim 128, 800 steps" ("dim 768 (full), ..." at FULL_WIDTH)."""
    dim, steps = _point(config)
    return f"dim {dim}{' (full)' if dim == FULL_WIDTH else ''}, {steps} steps"


# --- the group-level minibatch algorithm ---------------------------------------------------------------


def group_advantages(theta: Tensor, batch: Bandit, config: BanditConfig, generator) -> tuple:
    """As drostudy.rl.testbed's advantages (the same draws from `generator`), scaled by B * w with w the
    worst case over the batch's domains (drostudy.weights.group_worst_case_weights of the prompts' sampled
    losses -v, the ball around the batch's own domain shares): each prompt of domain g gets q_g / n_g."""
    plain = dataclasses.replace(config, radius=0.0)  # untouched leave-one-out advantages
    ys, old, advantages = _advantages(theta, batch, plain, generator)
    if ball_is_point(config.divergence, config.radius):
        return ys, old, advantages
    with torch.no_grad():
        # the sampled per-prompt values, as _advantages computes them for the example-level ball
        total = batch.reward.gather(1, ys) - config.beta * (old - batch.log_ref.gather(1, ys))
        weights = group_worst_case_weights(
            -total.mean(1), batch.domain, config.divergence, config.radius
        )
        advantages = advantages * (len(weights) * weights)[:, None]
    return ys, old, advantages


def run_group_minibatch(bandit: Bandit, config: BanditConfig) -> Tensor:
    """drostudy.rl.testbed.run_minibatch (same batches, draws, schedule and surrogate) with the ball over each
    batch's domains; returns theta (d,). A batch of one domain gives every prompt weight 1/B: plain."""
    return run_minibatch(bandit, config, advantages=group_advantages)[0]


def _group_rows(run: CapacityRun, train: Bandit, test: Bandit) -> dict:
    """compute()'s {"stage", "kind", "rows"} for a group-level run: its setting and the reference policy,
    each evaluated exactly per domain, with the split and the domain means of paired_runs."""
    (setting,) = [Setting(*s) for s in run.run.settings]
    config = dataclasses.replace(run.run.bandit, divergence=setting.divergence, radius=setting.radius)
    prompts = subsample(train, run.run.per_domain, run.seed)
    thetas = {REFERENCE: train.phi.new_zeros(train.phi.shape[-1])}
    thetas[setting.name] = run_group_minibatch(prompts, config)
    frames = [evaluate_policy(t, test).assign(setting=n, seed=run.seed) for n, t in thetas.items()]
    table = pd.concat(frames, ignore_index=True)
    train_domains = {train.domains[i] for i in train.domain.unique().tolist()}
    table["split"] = np.where(table["domain"].isin(train_domains), "id", "ood")
    keys = ["setting", "seed", "split", "metric"]
    means = table.groupby(keys, as_index=False)["value"].mean().assign(domain="mean")
    table = pd.concat([table, means], ignore_index=True).assign(stage=STAGE)
    return {"stage": STAGE, "kind": "paired", "rows": table[list(RESULT_COLUMNS)].to_dict("records")}


# --- running and reading ---------------------------------------------------------------------------------


def load(data: DataConfig, eval_domains: tuple[str, ...]) -> tuple[Bandit, Bandit]:
    """(train, test) bandits of `data` (test: the train domains, then `eval_domains`), as notebook 04's."""
    train, test, _ = load_bandits(data, tuple(data.train_domains) + tuple(eval_domains))
    if train.phi.shape[-1] != data.dim:
        raise ValueError(f"dim {data.dim} is wider than psi ({train.phi.shape[-1]} columns)")
    return train, test


def compute_run(run: CapacityRun, train: Bandit, test: Bandit) -> dict:
    """The rows of one CapacityRun on its loaded bandits (example level: notebook 04's compute)."""
    if run.level == "example":
        return compute(run.run, train, test)
    return _group_rows(run, train, test)


def run(configs: list[tuple[str, CapacityRun]], folder, loader=load) -> list[dict]:
    """`run_all` the planned runs (resuming finished ones) on one thread, each on the bandits of its data
    config, loaded once per config by `loader(data, eval_domains)` (the features come from the testbed's
    disk caches, shared by every capacity point)."""
    cached = functools.lru_cache(maxsize=None)(loader)
    with torch_threads(1):  # tiny float64 tensors: threads cost more than they bring
        return run_all(
            configs,
            folder,
            lambda c: compute_run(c, *cached(c.run.data, c.eval_domains)),
            desc="testbed capacity",
        )


def results(runs: list[dict], reference: bool = False) -> pd.DataFrame:
    """The long table (drostudy.analysis.stats.RESULT_COLUMNS) of finished runs, stage
    "rl_testbed · <capacity>", one row per run and quantity; the reference policy's rows (setting
    "reference", one copy per seed and capacity) only with `reference`, as they are no setting to compare."""
    frames = [
        pd.DataFrame(m["rows"]).assign(stage=capacity_stage(STAGE, capacity(m["config"]))) for m in runs
    ]
    table = pd.concat(frames, ignore_index=True)[list(RESULT_COLUMNS)]  # stored rows: keys sorted
    if not reference:
        table = table[table.setting != REFERENCE]
    table = table.drop_duplicates(["stage", "setting", "seed", "split", "domain", "metric"])
    return table.reset_index(drop=True)


def reference_table(runs: list[dict], metric: str = "correct") -> pd.DataFrame:
    """Per capacity (stage) and trained setting: the reference policy's OOD-mean `metric`, the paired
    difference setting - reference with its 95% interval, and `below` (the interval entirely below 0:
    training on the learned reward lost graded quality out of distribution at that capacity)."""
    table = results(runs, reference=True)
    ood = table[(table.split == "ood") & (table.domain == "mean") & (table.metric == metric)]
    rows = []
    for stage, block in ood.groupby("stage", sort=False):
        wide = block.pivot(index="seed", columns="setting", values="value")
        for setting in [s for s in block.setting.unique() if s != REFERENCE]:
            c = paired_comparison(wide[setting], wide[REFERENCE])
            interval = dict(mean_diff=c.mean_diff, ci_low=c.ci_low, ci_high=c.ci_high)
            reference = float(wide[REFERENCE].mean())
            row = dict(stage=stage, setting=setting, reference=reference, **interval)
            rows.append(row | {"below": bool(c.ci_high < 0)})
    return pd.DataFrame(rows)
