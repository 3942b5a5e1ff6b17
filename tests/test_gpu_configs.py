"""The FULL (GPU) configuration of notebook 04 (notebook 03's: tests/test_dpo_study.py), every method for
one step on tiny random models on the CPU: the GPU path constructs its trainer, moves the models to the
trainer's device, steps and evaluates. Only the model and the counts that set the CPU time (steps, training
and held-out sizes) are swapped; every other FULL field (LoRA layers, batch sizes, lengths, rates, domains) is
the one a GPU run uses."""

import dataclasses
import math

import pytest

from drostudy.rl import study as rl_sizes
from drostudy.rl.run import train_rl

pytestmark = pytest.mark.slow  # ~10 one-step runs of tiny models


def _finite(per_domain: dict) -> bool:
    return all(math.isfinite(v) for values in per_domain.values() for v in values.values())


@pytest.mark.parametrize("radius", [0.0, 0.2])
def test_full_rl_config_steps_on_tiny_models(radius):
    full = rl_sizes.pick(smoke=False, full=True).llm
    tiny = dataclasses.replace(full, model="tiny-llama", steps=1, n_eval=2)
    configs = rl_sizes.llm_configs(tiny, "tiny-bert", "tv", 0.2)
    (config,) = [c for _, c in configs if c.seed == 0 and c.radius == radius]
    assert config.n_train == full.n_train and config.learning_rate == pytest.approx(1e-2 / 3)
    metrics = train_rl(config)
    assert set(metrics["per_domain"]) == {*config.train_domains, *config.eval_domains}
    assert len(metrics["history"]) == 1 and _finite(metrics["per_domain"])
    assert math.isfinite(metrics["history"][0]["loss"])
