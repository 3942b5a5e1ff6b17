"""The FULL (GPU) configurations of notebooks 03 and 04, every method for one step on tiny random models on
the CPU: the GPU path constructs its trainer, moves the models to the trainer's device, steps and evaluates.
Only the model and the counts that set the CPU time (steps, training and held-out sizes) are swapped; every
other FULL field (LoRA layers, batch sizes, lengths, rates, domains) is the one a GPU run uses."""

import math

import pytest

from drostudy.analysis import dpo_study
from drostudy.dpo import study as dpo_sizes
from drostudy.dpo.run import DPORunConfig, train_and_evaluate
from drostudy.rl import study as rl_sizes
from drostudy.rl.run import train_rl

pytestmark = pytest.mark.slow  # ~10 one-step runs of tiny models
TINY_DPO = dict(model="tiny-llama", steps=1, n_eval=2, n_generate=1, max_new_tokens=2)


def _finite(per_domain: dict) -> bool:
    return all(math.isfinite(v) for values in per_domain.values() for v in values.values())


@pytest.mark.parametrize("radius", [0.0, 0.2])
def test_full_rl_config_steps_on_tiny_models(radius):
    config = rl_sizes.llm_config(
        "full", "tiny-bert", 1e-2, model="tiny-llama", steps=1, n_eval=2, radius=radius
    )
    full = rl_sizes.SIZES["full"][0]
    assert config.n_train == full["n_train"] and config.learning_rate == pytest.approx(1e-2 / 3)
    metrics = train_rl(config)
    assert set(metrics["per_domain"]) == {*config.train_domains, *config.eval_domains}
    assert len(metrics["history"]) == 1 and _finite(metrics["per_domain"])
    assert math.isfinite(metrics["history"][0]["loss"])


def test_full_dpo_configs_step_on_tiny_models():
    base = DPORunConfig(train_domains=("math", "code"), eval_domains=("reasoning", "knowledge"))
    methods = dpo_study.method_overrides({"tv": 0.2, "kl": 0.1, "chi2": 0.25})
    for label, overrides in methods.items():
        full = dpo_sizes.full_config(base, **overrides)
        assert full.lora_layers == dpo_sizes.FULL["lora_layers"] and "safety" in full.eval_domains
        # one step of batch_size pairs: n_train = one batch
        config = dpo_sizes.full_config(base, **overrides, **TINY_DPO, n_train=full.batch_size)
        metrics = train_and_evaluate(config)
        assert set(metrics["per_domain"]) == {*config.train_domains, *config.eval_domains}, label
        assert len(metrics["history"]) == 1 and _finite(metrics["per_domain"]), label


def test_notebook_03_full_reads_every_size_from_the_package():
    """Notebook 03's FULL cell sets its parameters of the same names from drostudy.dpo.study.FULL: each
    field must be one of them, or FULL=True would set a variable that nothing reads."""
    from pathlib import Path

    from drostudy.runner.notebooks import notebook_parameters

    defined = notebook_parameters(Path(__file__).parents[1] / "notebooks" / "03_dpo_robustness.ipynb")
    assert {field.upper() for field in dpo_sizes.FULL} <= set(defined)
    assert {"SEEDS", "METHODS", "GENERATE", "EVAL_DOMAINS"} <= set(defined)
    every = dpo_study.method_overrides({"tv": 0.2, "kl": 0.1, "chi2": 0.25}, wdpo_radius=1.0)
    assert set(dpo_sizes.FULL_METHODS.split(",")) == set(every) - {"ordinary"}
