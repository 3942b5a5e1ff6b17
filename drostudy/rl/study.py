"""Notebook 04's plan: its sizes per mode, its seeds and the LLM part's runs; the testbed part's settings and
runs are in drostudy.rl.testbed_plan.

    sizes = study.pick(SMOKE, FULL, testbed_seeds=TESTBED_SEEDS, llm_steps=LLM_STEPS, ...)
    plan = testbed_plan.build(sizes.testbed, "math,code", "tv", 0.2, radii="0.1,0.2,0.4", kl_radius=0.5)
    ...                                                       # the testbed part (drostudy.rl.testbed_plan)
    reward_dir = study.reward_model(folder, sizes.reward, "math,code", "reasoning,knowledge,safety")
    configs = study.llm_configs(sizes.llm, reward_dir, "tv", 0.2, train_domains="math,code", ...)
    runs = study.run_llm(configs, folder)

Part 1 is the exact testbed (drostudy.rl.testbed): a seed fixes the training prompts, the batch order and
the sampled responses, and every setting trains on it from theta = 0, so the settings' differences to the
plain algorithm are paired. Part 2 is SmolLM2-135M RLOO (drostudy.rl.run), ordinary and robust on the same
seeds, against a MiniLM reward model trained once by the reward stage. Every run is resumable: it goes
through drostudy.runs.run_all into a config-hashed folder, under the mode's own folder (FOLDERS).

The testbed's reference policy is uniform over the candidates by default: SmolLM2's own likelihood
(reference "smollm2") costs about an hour of CPU per split the first time and puts almost all mass on one
candidate.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from drostudy.config import mode, pick_sizes
from drostudy.rl.run import RLConfig, train_rl
from drostudy.runs import run_all, run_folder

# the runs folder of each mode, so that a SMOKE run never blocks the resumable runs of another size
FOLDERS = {"smoke": "04_rl_smoke", "default": "04_rl", "full": "04_rl_full"}


@dataclasses.dataclass(frozen=True)
class TestbedSizes:
    """The testbed part's sizes in one mode (TESTBED holds the smoke, default and full ones)."""

    seeds: int
    """paired seeds; the half-width of the primary interval shrinks as 1/sqrt(seeds)"""
    steps: int
    """minibatch steps of the testbed algorithm"""
    per_domain: int
    """training prompts per train domain drawn by each seed"""
    full_steps: int
    """steps of the full-batch exact solver (the reference optimum of the convergence table)"""
    convergence_batches: tuple[int, ...]
    """minibatch sizes compared in the convergence table"""


@dataclasses.dataclass(frozen=True)
class LLMSizes:
    """The SmolLM2 RLOO part's sizes in one mode (LLM): RLConfig fields, and the seeds."""

    model: str
    """the policy (drostudy.models.load_policy); tiny-llama is a random model, for the tests"""
    seeds: int
    """paired seeds per method"""
    steps: int
    """RLOO steps; about 14 s each for SmolLM2 at the default size on 2 quiet cores"""
    learning_rate: float
    """AdamW rate of the LoRA weights: at 1e-3, 6 steps left the policy where it was (KL <= 0.02 nats)"""
    n_train: int
    """distinct training prompts, split evenly over the train domains"""
    batch_size: int
    """prompts per step: the worst case is taken over these"""
    num_generations: int
    """sampled completions per prompt"""
    max_completion_length: int
    """sampled completion length in tokens"""
    max_length: int
    """longest prompt in tokens (chat template included); longer ones are left out"""
    n_eval: int
    """held-out prompts per domain answered greedily (0: all of them)"""
    max_new_tokens: int
    """greedy answer length in tokens"""
    lora_layers: int
    """LoRA on this many top layers"""


@dataclasses.dataclass(frozen=True)
class RewardSizes:
    """The reward model the policies train against, in one mode (REWARD): RMConfig fields."""

    model: str
    """the reward backbone (drostudy.models.load_reward_model); tiny-bert is random, for the tests"""
    frozen_layers: int
    """lower encoder layers kept frozen (their outputs cached by the reward stage's engine)"""
    n_train: int
    """training pairs of the train domains"""
    n_eval: int
    """held-out pairs per domain for its test accuracy"""
    batch_size: int
    """pairs per step"""
    steps: int
    """optimiser steps: one pass over the n_train pairs"""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Notebook 04's sizes in one mode: its two parts and the reward model (`pick`)."""

    testbed: TestbedSizes
    """the exact testbed"""
    llm: LLMSizes
    """the SmolLM2 RLOO runs"""
    reward: RewardSizes
    """the reward model of the RLOO runs"""


_TESTBED = TestbedSizes(
    seeds=20, steps=200, per_domain=300, full_steps=1000, convergence_batches=(8, 32, 128)
)
TESTBED = {
    # the test suite's: a few seeds and steps (the numbers then mean little)
    "smoke": TestbedSizes(seeds=3, steps=20, per_domain=40, full_steps=100, convergence_batches=(4, 16)),
    "default": _TESTBED,  # a few minutes on 2 CPU cores
    "full": _TESTBED,  # FULL grows the LLM part only
}
_LLM = LLMSizes(
    model="smollm2-135m-instruct",
    seeds=2,  # a demonstration at this size: a third seed (as before) costs about 8.7 of the 90 minutes
    steps=10,
    learning_rate=1e-2,
    n_train=64,
    batch_size=4,
    num_generations=4,
    max_completion_length=12,
    max_length=96,
    n_eval=12,
    max_new_tokens=12,
    lora_layers=4,
)
LLM = {
    # tiny random models: the path runs end to end, the numbers mean nothing
    "smoke": dataclasses.replace(
        _LLM,
        model="tiny-llama",
        seeds=2,
        steps=2,
        n_train=4,
        batch_size=2,
        num_generations=2,
        max_completion_length=4,
        max_length=120,
        n_eval=3,
        max_new_tokens=4,
        lora_layers=1,
    ),
    "default": _LLM,  # 2 CPU cores: shows the robust trainer end to end, resolves no small difference
    # one GPU (scripts/gpu_study.sh; not run yet, the sizes are estimates): more prompts, steps and seeds
    # at a third of the rate
    "full": dataclasses.replace(_LLM, seeds=4, steps=40, learning_rate=1e-2 / 3, n_train=160, n_eval=48),
}
_REWARD = RewardSizes(
    model="minilm-l6", frozen_layers=4, n_train=600, n_eval=100, batch_size=16, steps=38
)
REWARD = {
    "smoke": RewardSizes(
        model="tiny-bert", frozen_layers=1, n_train=32, n_eval=8, batch_size=8, steps=4
    ),
    "default": _REWARD,
    "full": dataclasses.replace(_REWARD, n_train=1500, steps=94),
}


def pick(
    smoke: bool,
    full: bool = False,
    *,
    testbed_seeds: int | None = None,
    testbed_steps: int | None = None,
    per_domain: int | None = None,
    full_steps: int | None = None,
    convergence_batches: str | tuple[int, ...] | None = None,
    llm_seeds: int | None = None,
    llm_steps: int | None = None,
    learning_rate: float | None = None,
) -> Sizes:
    """The sizes of the notebook's mode (drostudy.config.pick_sizes on each part's presets), with each of
    the notebook's size parameters that is not None; convergence_batches may be comma-separated."""
    testbed = pick_sizes(
        TESTBED,
        smoke,
        full,
        seeds=testbed_seeds,
        steps=testbed_steps,
        per_domain=per_domain,
        full_steps=full_steps,
        convergence_batches=convergence_batches,
    )
    llm = pick_sizes(LLM, smoke, full, seeds=llm_seeds, steps=llm_steps, learning_rate=learning_rate)
    return Sizes(testbed=testbed, llm=llm, reward=pick_sizes(REWARD, smoke, full))


def runs_folder(root: str | Path, smoke: bool, full: bool = False) -> Path:
    """The folder of the mode's runs under `root` (FOLDERS)."""
    return Path(root) / FOLDERS[mode(smoke, full)]


def domains(names: str | tuple[str, ...]) -> tuple[str, ...]:
    """Domains given comma-separated (a notebook parameter) or as a tuple."""
    return tuple(x for x in names.split(",") if x) if isinstance(names, str) else tuple(names)


# --- part 2: SmolLM2 RLOO ---------------------------------------------------------------------------------


def reward_model(folder: str | Path, sizes: RewardSizes, train_domains, eval_domains) -> Path:
    """The reward model the policies train against: trained once by the reward stage (its cached engine) on
    the train domains' pairs and saved in `folder`/reward-<model> (drostudy.rl.reward.train_reward_for_rl)."""
    from drostudy.rl.reward import train_reward_for_rl

    fields = dataclasses.asdict(sizes)
    return train_reward_for_rl(
        Path(folder) / f"reward-{sizes.model}",
        train_domains=domains(train_domains),
        eval_domains=domains(eval_domains),
        **fields,
    )


def llm_configs(
    sizes: LLMSizes, reward_model: str | Path, divergence: str, radius: float, **fields
) -> list[tuple[str, RLConfig]]:
    """(method, RLConfig) of every LLM run: ordinary (radius 0) and robust (`divergence`, `radius`) on each
    of the sizes' seeds; `fields` are other RLConfig fields (train_domains, eval_domains, given
    comma-separated or as tuples)."""
    for name in ("train_domains", "eval_domains"):
        if name in fields:
            fields[name] = domains(fields[name])
    size_fields = {
        f.name: getattr(sizes, f.name) for f in dataclasses.fields(sizes) if f.name != "seeds"
    }
    base = RLConfig(reward_model=str(reward_model), divergence=divergence, **size_fields, **fields)
    configs = []
    for seed in range(sizes.seeds):
        for r in (0.0, radius):
            config = dataclasses.replace(base, radius=r, seed=seed)
            configs.append((config.method, config))
    return configs


def run_llm(configs: list[tuple[str, RLConfig]], folder: str | Path) -> list[dict]:
    """Train (or resume) every LLM run in its config-hashed folder under `folder`; each metrics dict gains
    its `run_dir`."""
    records = run_all(configs, folder, train_rl, desc="LLM runs")
    for record, (method, config) in zip(records, configs, strict=True):
        record["run_dir"] = str(run_folder(folder, method, config))
    return records
