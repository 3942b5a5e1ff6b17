"""Notebook 03's plan (drostudy.dpo.study): the sizes per mode and the notebook's parameters that set them,
the methods and their labels, the plan's order; and the FULL (GPU) sizes, every method for one step on a
tiny random model on the CPU (only the model and the counts that set the CPU time are swapped)."""

import dataclasses
import math
from pathlib import Path

import pytest

from drostudy.dpo import study
from drostudy.dpo.run import train_and_evaluate
from drostudy.runner.notebooks import notebook_parameters

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_dpo_robustness.ipynb"
RADII = {"tv": 0.2, "kl": 0.1, "chi2": 0.25}
TINY = dict(model="tiny-llama", steps=1, n_eval=2, n_generate=1, max_new_tokens=2)


def test_every_size_is_a_notebook_parameter_left_at_none():
    defined = notebook_parameters(NOTEBOOK)
    for field in dataclasses.fields(study.Sizes):
        assert defined.get(field.name.upper(), "missing") is None, field.name


def test_pick_keeps_the_modes_sizes_and_takes_the_parameters_set():
    assert study.pick(False) == study.PRESETS["default"]
    smoke = study.pick(True, seeds=None, methods="tv,kl", eval_domains="reasoning", n_eval=0)
    assert smoke.model == "tiny-llama" and smoke.seeds == study.PRESETS["smoke"].seeds
    assert smoke.methods == ("tv", "kl") and smoke.eval_domains == ("reasoning",) and smoke.n_eval == 0
    assert study.pick(False, True).methods == study.METHODS  # full: every method
    with pytest.raises(ValueError, match="exclusive"):
        study.pick(True, True)
    with pytest.raises(ValueError, match="unknown method"):
        study.pick(False, methods="tv,group")


def test_method_selection_keeps_ordinary_first_and_rejects_unknown_names():
    every = study.method_overrides({"tv": 0.2}, wdpo_radius=3.0)
    assert list(study.select_methods(every, "wdpo,tv")) == ["ordinary", "wdpo", "tv"]
    assert "wdpo" not in study.method_overrides({"tv": 0.2})  # radius 0: WDPO is ordinary DPO
    with pytest.raises(ValueError, match="unknown method"):
        study.select_methods(every, "tv,dpo")


def test_plan_labels_every_run_by_its_setting_seeds_outermost():
    sizes = study.pick(True)
    base = study.base_config(sizes, "math,code", reg=0.1, group_step=5.0)
    every = study.method_overrides(RADII, wdpo_radius=3.0)
    plan = study.plan(base, study.select_methods(every, study.METHODS), 2)
    labels = ["ordinary", "tv 0.2", "kl 0.1", "chi2 0.25", "dr_dpo", "kldpo", "group_eg", "rdpo", "wdpo"]
    assert [label for label, _ in plan] == labels * 2
    assert [c.seed for _, c in plan] == [0] * 9 + [1] * 9
    config = dict(plan)["kldpo"]
    assert (config.reg, config.train_domains, config.n_train) == (0.1, ("math", "code"), sizes.n_train)
    assert study.as_parameters(sizes)["METHODS"] == ",".join(sizes.methods)


def test_ordinary_dpo_moves_along_beta_and_steps_on_the_same_seeds_under_its_own_labels():
    sizes = study.pick(True, methods="tv,wdpo", betas="0.4,0.1,1.6", steps_grid="1,2,4")
    assert sizes.steps_grid == (1, 2, 4) and sizes.steps == 2
    base = study.base_config(sizes, "math,code", beta=0.1)
    methods = study.select_methods(study.method_overrides(RADII, 3.0), sizes.methods)
    plan = study.plan(base, methods, 2)
    knob_plan = study.plan(base, methods, 2, sizes.betas, sizes.steps_grid)
    labels = ["ordinary", "tv 0.2", "wdpo", "ordinary beta 0.4", "ordinary beta 1.6"]
    labels += ["ordinary steps 1", "ordinary steps 4"]  # beta 0.1 and 2 steps: the plain baseline
    assert [label for label, _ in knob_plan] == labels * 2
    plain = [c for label, c in knob_plan if label in labels[:3]]
    assert plain == [c for _, c in plan]  # the plain runs unchanged
    curves = study.knob_curves(knob_plan)
    assert curves == {
        "beta": {"ordinary": 0.1, "ordinary beta 0.4": 0.4, "ordinary beta 1.6": 1.6},
        "steps": {"ordinary": 2.0, "ordinary steps 1": 1.0, "ordinary steps 4": 4.0},
    }
    assert study.knob_settings(knob_plan) == set(labels[3:])
    for label, config in knob_plan:
        assert config.method == ("ordinary" if "ordinary" in label else config.method)
        if label.startswith("ordinary "):  # one knob moved, the other at the plain value
            assert config.loss == "ordinary" and config.wdpo_radius == 0
            knob = label.split()[1]
            assert getattr(config, knob) == curves[knob][label]
            other = {"beta": ("steps", 2), "steps": ("beta", 0.1)}[knob]
            assert getattr(config, other[0]) == other[1]
    assert study.knob_curves(plan) == {}  # nothing moved: no curve
    assert study.as_parameters(sizes)["BETAS"] == "0.4,0.1,1.6"
    assert study.as_parameters(sizes)["STEPS_GRID"] == "1,2,4"


def _finite(per_domain: dict) -> bool:
    return all(math.isfinite(v) for values in per_domain.values() for v in values.values())


@pytest.mark.slow  # two one-step runs of a tiny model on TRL's path
def test_full_dpo_configs_step_on_tiny_models():
    full = study.PRESETS["full"]
    assert full.lora_layers == 30 and "safety" in full.eval_domains
    # one step of batch_size pairs: n_train = one batch
    sizes = dataclasses.replace(full, **TINY, n_train=full.batch_size)
    base = study.base_config(sizes, "math,code")
    plan = study.plan(base, study.method_overrides(RADII), 1)
    stepped = {"tv 0.2", "group_eg"}
    assert len(plan) == 8 and {label for label, _ in plan} >= stepped | {"ordinary", "dr_dpo"}
    # every method's config is built at the full size; two of them step, the two ways a weighted run is
    # put together on TRL's path (a ball's per-pair weights; the group column and its state): each loss
    # itself is checked against its formula in test_dpo_trainer (ordinary DPO is the ball at radius 0
    # there, and TRL's own), and every method runs in notebook 03's smoke test
    for label, config in plan:
        if label not in stepped:
            continue
        metrics = train_and_evaluate(config)
        assert set(metrics["per_domain"]) == {*config.train_domains, *config.eval_domains}, label
        assert len(metrics["history"]) == 1 and _finite(metrics["per_domain"]), label
