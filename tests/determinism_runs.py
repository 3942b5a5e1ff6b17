"""One run of a stage's default path at SMOKE size, its metrics printed as JSON: what
tests/test_determinism.py runs in fresh processes at 1 and at 2 threads and compares.

`python tests/determinism_runs.py STAGE OUT_DIR`, STAGE one of `STAGES`; each builds its run as its notebook
does at SMOKE size (02: the cached reward engine on tiny-bert; 03: the DPO fast path on tiny-llama; 04: the
exact testbed, and the RLOO trainer on tiny-llama with a tiny-bert reward model).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path


def reward(out: Path) -> dict:
    from drostudy.reward.cached_runs import CachedRuns
    from drostudy.reward.run import RMConfig

    base = RMConfig(
        model="tiny-bert",
        n_train=48,
        n_eval=16,
        steps=3,
        truncate_length=64,
        frozen_layers=2,
        engine="cached",
    )
    return CachedRuns(base).train(dataclasses.replace(base, divergence="tv", radius=0.5, seed=1))


def dpo(out: Path) -> dict:
    from drostudy.dpo import study
    from drostudy.dpo.fast_run import FastDPORunConfig, train_and_evaluate

    base = FastDPORunConfig(
        model="tiny-llama", steps=2, n_train=32, n_eval=8, n_generate=2, max_new_tokens=4, seed=1
    )
    config = dataclasses.replace(base, **study.method_overrides({"tv": 0.2})["tv"])
    return train_and_evaluate(config)


def rl_testbed(out: Path) -> dict:
    from drostudy.rl.testbed import BanditConfig
    from drostudy.rl.testbed_data import DataConfig, load_bandits
    from drostudy.rl.testbed_experiments import TestbedRun
    from drostudy.rl.testbed_plan import BASELINE, run_testbed

    data = DataConfig()
    train, test, _ = load_bandits(data, ("math", "code", "reasoning", "knowledge", "safety"))
    bandit = BanditConfig(divergence="tv", radius=0.2, steps=20, full_steps=100, seed=1)
    settings = ((BASELINE, "tv", 0.0), ("tv 0.2", "tv", 0.2))
    run = TestbedRun("paired", bandit, data, settings=settings, per_domain=40)
    (metrics,) = run_testbed([("paired", run)], None, train, test, "paired")
    return metrics


def rl_llm(out: Path) -> dict:
    from drostudy.rl import study
    from drostudy.rl.reward import train_reward_for_rl
    from drostudy.rl.run import train_rl

    sizes = study.pick(smoke=True)
    reward_dir = train_reward_for_rl(out / "reward", **dataclasses.asdict(sizes.reward))
    configs = study.llm_configs(sizes.llm, reward_dir, "tv", 0.2)
    (config,) = [c for method, c in configs if method == "robust" and c.seed == 1]
    return train_rl(config)


STAGES = {"reward": reward, "dpo": dpo, "rl_testbed": rl_testbed, "rl_llm": rl_llm}


def without_timings(value):
    """`value` with every timing (`timings`, keys ending in _s, `runtime`, `step_time`) removed: those differ
    by design."""
    if isinstance(value, dict):
        return {
            k: without_timings(v)
            for k, v in value.items()
            if k != "timings" and not k.endswith("_s") and "runtime" not in k and "time" not in k
        }
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


if __name__ == "__main__":
    stage, out = sys.argv[1], Path(sys.argv[2])
    metrics = STAGES[stage](out)
    print(json.dumps(without_timings(metrics), sort_keys=True, default=str))
