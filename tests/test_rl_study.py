"""Notebook 04's plan (drostudy.rl.study, drostudy.rl.testbed_plan): the sizes per mode, the notebook's
overrides, the settings' names, the LLM runs' configs, and the testbed runs on one thread."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch
from test_testbed import SMALL, synthetic_bandit

from drostudy.analysis.stats import comparisons_table
from drostudy.rl import study, testbed_plan
from drostudy.rl.testbed import BanditConfig
from drostudy.rl.testbed_experiments import TestbedRun


def test_each_mode_has_sizes_and_none_keeps_them():
    for smoke, full in ((True, False), (False, False), (False, True)):
        sizes = study.pick(smoke, full, testbed_seeds=None, llm_steps=None)
        name = "smoke" if smoke else "full" if full else "default"
        assert sizes == study.Sizes(study.TESTBED[name], study.LLM[name], study.REWARD[name])
    assert study.pick(True).llm.model == "tiny-llama" and study.pick(True).reward.model == "tiny-bert"
    assert study.pick(False, True).llm.learning_rate == pytest.approx(
        study.LLM["default"].learning_rate / 3
    )


def test_the_notebook_parameters_override_the_mode():
    sizes = study.pick(
        True, testbed_seeds=5, per_domain=7, convergence_batches="2,3", llm_seeds=1, learning_rate=0.5
    )
    assert (sizes.testbed.seeds, sizes.testbed.per_domain) == (5, 7)
    assert sizes.testbed.convergence_batches == (2, 3) and sizes.testbed.steps == 20
    assert (sizes.llm.seeds, sizes.llm.learning_rate, sizes.llm.steps) == (1, 0.5, 2)
    with pytest.raises(ValueError, match="exclusive"):
        study.pick(True, True)


@pytest.mark.parametrize("mode", ["smoke", "default", "full"])
def test_the_reward_model_trains_one_pass(mode):
    sizes = study.REWARD[mode]
    assert sizes.steps == math.ceil(sizes.n_train / sizes.batch_size)


def test_settings_are_named_as_every_results_table():
    settings = testbed_plan.testbed_settings("tv", 0.2, "0.1,0.2,0.4", kl_radius=0.5)
    assert settings == (
        ("ordinary", "tv", 0.0, None),
        ("tv 0.1", "tv", 0.1, None),
        ("tv 0.2", "tv", 0.2, None),
        ("tv 0.4", "tv", 0.4, None),
        ("kl 0.5", "kl", 0.5, None),
    )
    assert [s[0] for s in testbed_plan.testbed_settings("tv", 0.1, (0.1,))] == ["ordinary", "tv 0.1"]


def test_ordinary_moves_along_its_own_beta():
    settings = testbed_plan.testbed_settings("tv", 0.2, "0.2", betas="0.4,0.1,0.05", beta=0.1)
    # the default beta stays plain "ordinary"; the others carry their own beta, sorted
    assert settings[2:] == (
        ("ordinary beta 0.05", "tv", 0.0, 0.05),
        ("ordinary beta 0.4", "tv", 0.0, 0.4),
    )
    sizes = study.pick(True).testbed
    plan = testbed_plan.build(sizes, "math", "tv", 0.2, "0.2", 0.5, betas=(0.4, 0.05), beta=0.1)
    assert testbed_plan.knobs(plan) == {
        "ordinary": 0.1,
        "ordinary beta 0.05": 0.05,
        "ordinary beta 0.4": 0.4,
    }
    assert testbed_plan.compared(plan) == ["ordinary", "tv 0.2", "kl 0.5"]


def test_the_primary_ball_must_be_a_setting():
    sizes = study.pick(True).testbed
    plan = testbed_plan.build(sizes, "math", "tv", 0.4, "0.1,0.4", beta=0.2, batch_size=8, samples=3)
    assert plan.primary == "tv 0.4" and plan.data.train_domains == ("math",)
    assert (plan.bandit.beta, plan.bandit.batch_size, plan.bandit.samples) == (0.2, 8, 3)
    assert (plan.bandit.steps, plan.bandit.full_steps, plan.seeds) == (20, 100, 3)
    with pytest.raises(ValueError, match="primary ball 'tv 0.3'"):
        testbed_plan.build(sizes, "math", "tv", 0.3, "0.1,0.4")


def test_llm_configs_pair_ordinary_and_robust_on_each_seed():
    sizes = study.pick(True).llm
    configs = study.llm_configs(
        sizes, "tiny-bert", "kl", 0.3, train_domains="math", eval_domains="safety"
    )
    assert [(m, c.seed, c.radius) for m, c in configs] == [
        ("ordinary", 0, 0.0),
        ("robust", 0, 0.3),
        ("ordinary", 1, 0.0),
        ("robust", 1, 0.3),
    ]
    config = configs[1][1]
    assert (config.divergence, config.train_domains, config.eval_domains) == (
        "kl",
        ("math",),
        ("safety",),
    )
    fields = {f.name for f in dataclasses.fields(sizes)} - {"seeds"}
    assert all(getattr(config, name) == getattr(sizes, name) for name in fields)


def test_testbed_runs_use_one_thread_and_restore_the_count(monkeypatch):
    seen = []

    def compute(run, train, test):
        seen.append(torch.get_num_threads())
        return {"rows": []}

    monkeypatch.setattr(testbed_plan, "compute", compute)
    before = torch.get_num_threads()
    run = TestbedRun("curves", BanditConfig(**SMALL))
    testbed_plan.run_testbed([("curves", run)], None, synthetic_bandit(), synthetic_bandit(), "x")
    assert seen == [1] and torch.get_num_threads() == before


def _paired(betas: str, beta: float = 0.1):
    """run_paired of a small plan on the synthetic bandits (no folder: nothing written)."""
    sizes = dataclasses.replace(study.pick(True).testbed, seeds=2, per_domain=3, steps=15)
    plan = testbed_plan.build(
        sizes, "math", "tv", 0.3, "0.3", 0.5, betas=betas, beta=beta, batch_size=6, samples=3
    )
    return plan, testbed_plan.run_paired(plan, None, synthetic_bandit(), synthetic_bandit(seed=1))


def test_knob_settings_leave_the_plain_comparisons_bitwise_unchanged():
    plain_plan, plain = _paired("")
    plan, with_knob = _paired("0.05,0.4")
    assert set(with_knob.setting) == {"reference", "ordinary", "tv 0.3", "kl 0.5"} | {
        "ordinary beta 0.05",
        "ordinary beta 0.4",
    }
    # one reference row per seed, split, domain and metric (the knob runs repeat it)
    assert not with_knob.duplicated(["setting", "seed", "split", "domain", "metric"]).any()
    compared = with_knob[with_knob.setting.isin(testbed_plan.compared(plan))]
    before = comparisons_table(plain[plain.setting != "reference"], "ordinary", lower_is_better=("kl",))
    after = comparisons_table(compared, "ordinary", lower_is_better=("kl",))
    pd.testing.assert_frame_equal(before, after, check_exact=True)
    assert testbed_plan.compared(plain_plan) == testbed_plan.compared(plan)


def test_a_knob_setting_is_ordinary_at_that_beta_on_the_same_seed():
    _, knob = _paired("0.4")
    _, moved = _paired("", beta=0.4)
    a = knob[knob.setting == "ordinary beta 0.4"].drop(columns="setting").reset_index(drop=True)
    b = moved[moved.setting == "ordinary"].drop(columns="setting").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    plain = knob[knob.setting == "ordinary"].value.to_numpy()
    assert not (a.value.to_numpy() == plain).all()  # beta did change the run
