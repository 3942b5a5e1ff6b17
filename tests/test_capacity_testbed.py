"""The RL testbed's capacity axis (drostudy.capacity.testbed): the plan's shape, labels and pairing, the
group-level minibatch algorithm against the plain one, and a resumable run end to end on synthetic
bandits with its results and reference rows."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from test_testbed import SMALL, synthetic_bandit

from drostudy.analysis.stats import RESULT_COLUMNS, comparisons_table
from drostudy.capacity import testbed as cap
from drostudy.rl import study, testbed_plan
from drostudy.rl.testbed import BanditConfig, run_minibatch
from drostudy.runs import run_folder

WIDTH = 6  # the synthetic psi's width; the plan's dims slice its leading columns


def _bandits(width: int = WIDTH):
    """(train: domains d0 and d1, test: d0, d1 and the held-out d2) with `width` features."""
    full = synthetic_bandit(n_prompts=30, dim=width, n_domains=3)
    train = full.subset(torch.nonzero(full.domain < 2).flatten())
    return train, synthetic_bandit(n_prompts=15, dim=width, seed=1, n_domains=3)


def loader(data, eval_domains):
    """As capacity.testbed.load: the first `dim` columns of the full-width bandits."""
    train, test = _bandits()
    cut = lambda b: b._replace(phi=b.phi[..., : data.dim].contiguous())  # noqa: E731
    return cut(train), cut(test)


SIZES = dataclasses.replace(cap.PRESETS["smoke"], seeds=2, dims=(2, WIDTH), steps=(6, 12), per_domain=5)
FIELDS = dict(batch_size=6, samples=3)


def test_the_plan_pairs_every_setting_and_capacity_on_each_seed():
    configs = cap.plan(SIZES, **FIELDS)
    assert len(configs) == 2 * 2 * 2 * 3
    assert [label for label, _ in configs[:3]] == ["ordinary", "tv 0.2", "group tv 0.2"]
    assert [c.seed for _, c in configs] == [0] * 12 + [1] * 12  # seeds outermost
    assert [c.level for _, c in configs[:3]] == ["example", "example", "group"]
    for seed in (0, 1):
        mine = [c for _, c in configs if c.seed == seed]
        # the seed alone draws the prompts, the batch order and the draws: the same everywhere
        assert {(c.run.per_domain, c.run.bandit.seed, c.run.data.train_domains) for c in mine} == {
            (5, seed, ("math", "code"))
        }
        assert {cap.capacity(c) for c in mine} == {
            f"dim {d}, {s} steps" for d in (2, 6) for s in (6, 12)
        }
    folders = {run_folder("/r", label, c) for label, c in configs}
    assert len(folders) == len(configs)  # every run its own resumable folder


def test_sizes_per_mode_and_overrides():
    assert cap.pick(False) == cap.PRESETS["default"]
    assert cap.pick(True).seeds < cap.pick(False).seeds == study.pick(False).testbed.seeds
    # dims as notebook 06's DIMS parameter passes them
    picked = cap.pick(False, dims="32,128,64", seeds=None, levels="group")
    assert (picked.dims, picked.seeds, picked.levels) == ((32, 128, 64), 20, ("group",))
    # a dim the preset gives more seeds keeps them; one it does not name runs `seeds`
    assert [picked.seeds_at(d) for d in picked.dims] == [20, cap.PRESETS["default"].dim_seeds[128], 20]


def test_wider_dims_run_more_seeds_and_share_the_first_ones():
    dim_seeds = {SIZES.dims[0]: 1, SIZES.dims[1]: 3}
    sizes = dataclasses.replace(SIZES, seeds=2, dim_seeds=dim_seeds, steps=(6,))
    assert [sizes.seeds_at(d) for d in sizes.dims] == [2, 3]  # at least `seeds`
    configs = cap.plan(sizes, **FIELDS)
    points = [(c.seed, c.run.data.dim) for _, c in configs[::3]]
    assert points == [(0, 2), (0, 6), (1, 2), (1, 6), (2, 6)]  # seeds outermost
    assert cap.capacity(cap.plan(cap.pick(False))[-1][1]) == "dim 768 (full), 800 steps"
    with pytest.raises(ValueError, match="level"):
        cap.CapacityRun(cap.plan(SIZES)[0][1].run, level="domain")


def _two_domain_prompts():
    train, _ = _bandits()
    return train


def test_the_group_ball_is_plain_at_radius_zero_and_with_one_domain():
    config = BanditConfig(**SMALL, divergence="tv", radius=0.0, seed=3)
    prompts = _two_domain_prompts()
    plain, _ = run_minibatch(prompts, config)
    assert torch.equal(cap.run_group_minibatch(prompts, config), plain)
    one = prompts.subset(torch.nonzero(prompts.domain == 0).flatten())
    ball = dataclasses.replace(config, radius=0.5)
    assert torch.equal(cap.run_group_minibatch(one, ball), run_minibatch(one, config)[0])
    group = cap.run_group_minibatch(prompts, ball)
    assert not torch.equal(group, plain)
    assert not torch.equal(group, run_minibatch(prompts, ball)[0])  # not the example-level ball


def test_the_group_ball_weights_the_worse_domain_per_prompt():
    batch = _two_domain_prompts()
    config = BanditConfig(**SMALL, divergence="tv", radius=0.2)
    theta = torch.zeros(WIDTH, dtype=torch.float64)
    plain = dataclasses.replace(config, radius=0.0)
    ys, _, base = cap._advantages(theta, batch, plain, torch.Generator().manual_seed(0))
    ys2, _, scaled = cap.group_advantages(theta, batch, config, torch.Generator().manual_seed(0))
    assert torch.equal(ys, ys2)  # the same draws
    factor = (scaled / base)[base.abs() > 1e-9]  # per prompt: B * q_g / n_g
    by_domain = {
        int(d): (scaled / base)[(batch.domain == d)[:, None] & (base.abs() > 1e-9)].unique()
        for d in (0, 1)
    }
    assert all(len(v) == 1 for v in by_domain.values())  # one weight per domain
    assert set(factor.unique().tolist()) == {float(v) for v in by_domain.values()}
    counts = [int((batch.domain == d).sum()) for d in (0, 1)]
    mass = sum(float(by_domain[d]) * n for d, n in zip((0, 1), counts, strict=True)) / len(batch.mask)
    assert mass == pytest.approx(1.0)  # the weights are a distribution over the batch, times B
    assert float(by_domain[0]) != float(by_domain[1])


def test_run_resumes_and_gives_the_results_and_reference_rows(tmp_path, monkeypatch):
    configs = cap.plan(SIZES, **FIELDS)
    runs = cap.run(configs, tmp_path, loader)
    table = cap.results(runs)
    assert tuple(table.columns) == RESULT_COLUMNS
    assert set(table.setting) == {"ordinary", "tv 0.2", "group tv 0.2"}
    assert set(table.stage) == {f"rl_testbed · dim {d}, {s} steps" for d in (2, 6) for s in (6, 12)}
    assert set(table.split) == {"id", "ood"}
    assert not table.duplicated(["stage", "setting", "seed", "split", "domain", "metric"]).any()
    comparisons = comparisons_table(table, "ordinary", lower_is_better=("kl",))
    ood = comparisons[(comparisons.split == "ood") & (comparisons.domain == "mean")]
    assert len(ood[ood.metric == "correct"]) == 4 * 2  # per capacity point, each ball against ordinary
    reference = cap.reference_table(runs)
    assert len(reference) == 4 * 3 and set(reference.below) <= {True, False}
    with_ref = cap.results(runs, reference=True)
    assert len(with_ref[with_ref.setting == "reference"]) == len(table) // 3  # one copy per seed, point
    # resumed: every run read back from its folder, nothing computed again
    monkeypatch.setattr(cap, "compute_run", lambda *a: pytest.fail("recomputed a finished run"))
    again = cap.results(cap.run(configs, tmp_path, loader))
    pd.testing.assert_frame_equal(again, table)


def test_example_level_runs_are_notebook_04s_on_the_same_seed():
    sizes = dataclasses.replace(SIZES, dims=(WIDTH,), steps=(9,), levels=("example",))
    mine = cap.results(cap.run(cap.plan(sizes, **FIELDS), None, loader))
    tb_sizes = dataclasses.replace(study.pick(True).testbed, seeds=2, per_domain=5, steps=9)
    plan = testbed_plan.build(tb_sizes, "math,code", "tv", 0.2, "0.2", **FIELDS)
    theirs = testbed_plan.run_paired(plan, None, *loader(plan.data, ()))
    theirs = theirs[theirs.setting != "reference"]
    keys = ["setting", "seed", "split", "domain", "metric"]
    a = mine.drop(columns="stage").sort_values(keys).reset_index(drop=True)
    b = theirs.drop(columns="stage").sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
