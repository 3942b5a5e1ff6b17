"""Prompt-robust RL against a learned reward model: `python -m drostudy rl ...`.

    python -m drostudy rl --divergence tv --radius 0.1 --reward-model DIR --train-domains math,code \
        --eval-domains reasoning,safety --seed 0 --out runs/rl/tv-0.1-s0

Reads top to bottom: `RLConfig` -> `train_rl(config)`: load the policy (LoRA on its top layers; the reference
is the same model with the adapters off) and the reward model (a folder saved with save_pretrained, e.g. by
`train_reward_for_rl`), draw training prompts of the train domains, run `RobustRLOOTrainer` (TRL's RLOO:
G sampled completions per prompt, leave-one-out baseline, KL penalty beta in the reward, clipped sequence
surrogate; its advantages scaled by worst-case prompt weights, see drostudy.rl.trainer), then score
greedy answers on held-out prompts of every domain (drostudy.rl.eval; the reward:
drostudy.rl.reward). radius 0 is plain RLOO. `--trainer grpo` runs the same on RobustGRPOTrainer
(drostudy.rl.grpo_run, drostudy.rl.cli).

metrics.json (drostudy.runs layout): stage "rl", method "ordinary" | "robust", per_domain
{domain: {learned_reward, correct, kl, n, learned_reward_before, correct_before}} (the *_before are the
reference policy's, computed once per evaluation set and cached), and a per-step history with TRL's
`reward`, `kl`, `rewards/learned_reward/mean`, `samples/correct`, `loss` and `dro/*`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from drostudy.config import method_label
from drostudy.io import atomic_write_json, cache_dir, seed_everything
from drostudy.rl.eval import evaluate_rl_policy, prompt_rows
from drostudy.rl.reward import LearnedReward
from drostudy.rl.trainer import RobustRLOOTrainer
from drostudy.runs import (
    PolicyRunFields,
    history,
    lora_config,
    quiet_in_batch,
    training_command,
    trl_run_fields,
)
from drostudy.weights import validate_radius


@dataclass(frozen=True)
class RLConfig(PolicyRunFields):
    divergence: str = "tv"
    """ball over prompt distributions: tv, kl, chi2 or cvar (drostudy.weights.DIVERGENCES)"""
    radius: float = 0.0
    """ball size rho (cvar: tail fraction alpha, 1 = ordinary); 0 = plain RLOO"""
    reward_model: str = ""
    """reward model: a folder saved with save_pretrained (train_reward_for_rl), or a name (tiny-bert: tests)"""
    reward_truncate_length: int = 128
    """tokens of each (prompt, response) text the reward model reads (its truncate_length; the prompt is
    cut from the left), as in its training"""
    n_train: int = 64
    """distinct training prompts, split evenly over the train domains"""
    steps: int = 16
    """optimiser steps (one generation batch each)"""
    batch_size: int = 4
    """prompts per generation batch: the worst case is taken over this many prompts (times processes)"""
    num_generations: int = 4
    """sampled completions per prompt (G); RLOO's baseline for one is the mean of the other G - 1"""
    max_completion_length: int = 12
    """sampled completion length in tokens (the suite's answers are short)"""
    temperature: float = 1.0
    """sampling temperature of the completions"""
    beta: float = 0.05
    """KL coefficient: the reward is r - beta * KL(pi || pi_ref) summed over the completion's tokens"""
    learning_rate: float = 1e-3
    """AdamW learning rate of the LoRA weights (linear decay; as in the DPO stage)"""
    max_length: int = 96
    """prompts longer than this in tokens (chat template included) are left out, never truncated (CPU
    cost ~ length)"""
    n_eval: int = 16
    """held-out prompts per domain for greedy answers (0 = every held-out prompt)"""
    seed: int = 0
    """seed of the training prompts, LoRA initialisation and sampling (the evaluation prompts do not change)"""
    trl_args: tuple[str, ...] = ()
    """TRL training fields KEY=VALUE,... for RobustRLOOConfig (e.g. gradient_accumulation_steps=4)"""

    # old flag -> field (drostudy.config.RENAMED_FIELDS): they still parse, with a FutureWarning
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {
        "prompts_per_step": "batch_size",
        "max_prompt_tokens": "max_length",
        "reward_max_length": "reward_truncate_length",
    }

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "trl_args", tuple(self.trl_args))
        from drostudy.dropin.cli import trl_overrides

        trl_overrides(self.trl_classes()[0], self.trl_args)  # names and types checked before any loading
        validate_radius(self.divergence, self.radius)
        if not self.reward_model:
            raise ValueError(
                "reward_model must name a saved reward-model folder or one of drostudy.models'"
            )
        counts = ("reward_truncate_length", "n_train", "steps", "batch_size")
        for name in (*counts, "max_completion_length", "max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if isinstance(self.n_eval, bool) or not isinstance(self.n_eval, int) or self.n_eval < 0:
            raise ValueError(f"n_eval must be an integer >= 0 (0: every prompt); got {self.n_eval!r}")
        if isinstance(self.num_generations, bool) or not isinstance(self.num_generations, int):
            raise ValueError(f"num_generations must be an integer >= 2; got {self.num_generations!r}")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (RLOO's baseline); got {self.num_generations!r}"
            )
        for name in ("temperature", "learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        if not self.beta >= 0:
            raise ValueError(f"beta must be >= 0; got {self.beta!r}")

    def trl_classes(self) -> tuple[type, type]:
        """(Robust*Config, Robust*Trainer) of the run: RLOO here, GRPO in drostudy.rl.grpo_run."""
        from drostudy.dropin.configs import RobustRLOOConfig

        return RobustRLOOConfig, RobustRLOOTrainer

    @property
    def method(self) -> str:
        """`ordinary` when the ball is a point (radius 0, or cvar alpha 1), else `robust`."""
        return method_label(self.divergence, self.radius)


def build_data(config: RLConfig, tokenizer):
    """(train Dataset of chat prompts with answer and domain, {domain: held-out rows}) for this config."""
    from datasets import Dataset

    from drostudy.data import load_suite

    suite = load_suite()
    per_domain = -(-config.n_train // len(config.train_domains))  # ceil
    args = (tokenizer, config.max_length, config.system_prompt)
    train = []
    for domain in config.train_domains:
        train += prompt_rows(suite["train"], domain, per_domain, *args, seed=config.seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
    train = Dataset.from_list([train[i] for i in order[: config.n_train].tolist()])
    domains = dict.fromkeys((*config.train_domains, *config.eval_domains))
    test = {d: prompt_rows(suite["test"], d, config.n_eval, *args, seed=0) for d in domains}
    return train, test


def trl_config(config: RLConfig, output_dir: str, **overrides):
    """RobustRLOOConfig of `config` for a CPU-friendly run: fp32, no reports, no checkpoints, log every step."""
    config_cls = config.trl_classes()[0]

    kwargs = (
        trl_run_fields(config, output_dir)
        | dict(
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size * config.num_generations,
            num_generations=config.num_generations,
            max_completion_length=config.max_completion_length,
            temperature=config.temperature,
            beta=config.beta,
            logging_steps=1,
            disable_tqdm=None,  # bars unless transformers logs at error level only (batch runs)
            gradient_checkpointing=False,  # RLOO defaults to True (recomputes forwards); short sequences need no saving
        )
    )
    from drostudy.dropin.cli import trl_overrides

    robust = dict(divergence=config.divergence, radius=config.radius)
    trl = trl_overrides(config_cls, config.trl_args)
    return config_cls(**(kwargs | robust | trl | overrides))


def load_reward(config: RLConfig) -> LearnedReward:
    from drostudy.models import load_reward_model

    model, tokenizer = load_reward_model(config.reward_model)
    return LearnedReward(model, tokenizer, config.reward_truncate_length)


def build_trainer(config: RLConfig, policy, tokenizer, reward: LearnedReward, train, output_dir: str):
    """The RobustRLOOTrainer of `config` (LoRA policy) on a Dataset of chat prompts."""
    trainer = config.trl_classes()[1](
        model=policy,
        reward_funcs=reward,
        args=trl_config(config, output_dir),
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=lora_config(config, policy.config.num_hidden_layers),
    )
    quiet_in_batch(trainer)
    reward.model.to(trainer.accelerator.device)
    return trainer


def reference_metrics(policy, tokenizer, reward: LearnedReward, test: dict, config: RLConfig) -> dict:
    """Per-domain learned reward and correctness of the reference policy, cached (the same in every run)."""
    prompts = {d: [r["prompt"] for r in rows] for d, rows in test.items()}
    identity = _reward_identity(config.reward_model)
    key = [config.model, identity, config.reward_truncate_length, config.max_new_tokens, prompts]
    path = (
        cache_dir()
        / "rl_reference"
        / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}.json"
    )
    if path.exists():
        return json.loads(path.read_text())
    with torch.no_grad(), _adapters_off(policy):
        out = evaluate_rl_policy(
            policy, tokenizer, reward, test, config.max_new_tokens, reference=policy
        )
    if config.model != "tiny-llama":  # a random tiny policy is rebuilt every time: nothing worth caching
        atomic_write_json(path, out)
    return out


def _adapters_off(policy):
    from drostudy.evaluate import reference_context

    return reference_context(policy)


def _reward_identity(name: str) -> str:
    """The reward model's name, plus its weights' modification time when it is a folder (a retrained one)."""
    folder = Path(name)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    return f"{folder.resolve()}@{max(f.stat().st_mtime_ns for f in files)}" if files else name


def train_rl(config: RLConfig, save_dir: str | None = None) -> dict:
    """Train with `config`, evaluate every domain; returns the metrics dict (the module docstring's layout).
    save_dir: where to save the trained adapter and tokenizer (None: not saved)."""
    from drostudy.models import load_policy

    seed_everything(config.seed)
    policy, tokenizer = load_policy(config.model)
    reward = load_reward(config)
    train, test = build_data(config, tokenizer)
    timings = {}
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        trainer = build_trainer(config, policy, tokenizer, reward, train, output_dir)
        timings["setup_s"] = time.perf_counter() - start
        trainer.train()
        timings["train_s"] = time.perf_counter() - start - timings["setup_s"]
        if save_dir is not None:
            trainer.save_model(save_dir)  # the adapter, training_args.bin, drostudy_robust.json
            tokenizer.save_pretrained(save_dir)
    model = trainer.model
    start = time.perf_counter()
    before = reference_metrics(model, tokenizer, reward, test, config)
    per_domain = evaluate_rl_policy(model, tokenizer, reward, test, config.max_new_tokens)
    for domain, stats in per_domain.items():
        stats["learned_reward_before"] = before[domain]["learned_reward"]
        stats["correct_before"] = before[domain]["correct"]
    timings["eval_s"] = time.perf_counter() - start
    return {
        "stage": "rl",
        "method": config.method,
        "divergence": config.divergence,
        "radius": config.radius,
        "seed": config.seed,
        "per_domain": per_domain,
        "timings": {**timings, "train_step_s": timings["train_s"] / config.steps},
        "n_train": len(train),
        "history": history(trainer.state.log_history),
    }


# The lambda looks the training function up at call time, so tests and users can patch it.
add_cli_arguments, cli_main = training_command(RLConfig, lambda config, **kw: train_rl(config, **kw))
