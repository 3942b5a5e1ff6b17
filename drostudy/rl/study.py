"""The sizes of notebook 04's SmolLM2 RLOO part, in one place: the notebook builds its configs here and
tests/test_gpu_configs.py steps the FULL one (tiny models, one step) so the GPU path is exercised on a CPU.

SIZES[size] = (RL sizes: RLConfig fields, reward-model sizes: RMConfig fields, seeds, learning-rate factor):
- smoke: tiny random models (tests), numbers meaningless;
- default: what 2 CPU cores afford inside the notebook's budget (steps: the notebook's LLM_STEPS);
- full: for one GPU (scripts/gpu_study.sh), more prompts, steps and seeds at a third of the rate.
"""

from __future__ import annotations

from drostudy.rl.run import RLConfig

_TINY_RL = dict(
    model="tiny-llama",
    n_train=4,
    prompts_per_step=2,
    num_generations=2,
    max_completion_length=4,
    n_eval=3,
    max_new_tokens=4,
    lora_layers=1,
    max_prompt_tokens=120,
    steps=2,
)
SIZES = {
    "smoke": (_TINY_RL, dict(model="tiny-bert", frozen_layers=1, n_train=32, n_eval=8, batch_size=8), 2, 1.0),
    "default": (dict(n_eval=12), dict(model="minilm-l6", n_train=600, n_eval=100), 3, 1.0),
    "full": (dict(n_eval=48, n_train=160, steps=40), dict(model="minilm-l6", n_train=1500, n_eval=100), 4, 1 / 3),
}  # fmt: skip


def size_name(smoke: bool, full: bool) -> str:
    """smoke wins over full: a CI run of the FULL notebook stays tiny."""
    return "smoke" if smoke else "full" if full else "default"


def llm_config(size: str, reward_model: str, learning_rate: float, **fields) -> RLConfig:
    """The RLConfig of `size` (SIZES) with `reward_model`, the size's share of `learning_rate` and any
    other RLConfig `fields` (domains, divergence; a test swaps in model="tiny-llama", steps=1)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}; got {size!r}")
    rl, _, _, rate_factor = SIZES[size]
    merged = {**rl, "learning_rate": learning_rate * rate_factor, **fields}
    return RLConfig(reward_model=str(reward_model), **merged)


def reward_sizes(size: str) -> dict:
    """The RMConfig fields of the reward model trained for `size` (drostudy.rl.reward.train_reward_for_rl)."""
    return dict(SIZES[size][1])


def seeds(size: str) -> int:
    return SIZES[size][2]
