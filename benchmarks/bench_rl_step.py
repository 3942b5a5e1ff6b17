"""Step time of the robust RL trainer (RLOO, or GRPO) against TRL's plain one, in one process, interleaved.

    python benchmarks/bench_rl_step.py --policy tiny-llama --reward-model tiny-bert --repeats 6
    python benchmarks/bench_rl_step.py --trainer grpo --policy tiny-llama --reward-model tiny-bert
    python benchmarks/bench_rl_step.py --policy smollm2-135m-instruct --reward-model DIR --repeats 4

Both trainers get the same policy weights, the same generation batch and the same random state before each
step, so they sample the same completions; one step is `training_step` (generation, reward and reference
scoring, the worst-case weights for the robust one, the clipped loss and its backward; GRPO with
steps_per_generation = 1, its weights applied after the group normalisation). The order alternates
each repeat so drift in machine load hits both alike. Reports medians of wall and process CPU time (the
CPU time is the fairer one on a shared machine), their robust/plain ratio, and the cost of the weighting
alone (values + worst-case weights on a batch of that size).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch
from datasets import Dataset
from trl import GRPOTrainer, RLOOTrainer

from drostudy.data import load_suite
from drostudy.io import atomic_write_json
from drostudy.models import load_policy
from drostudy.rl import run as rl
from drostudy.rl.eval import prompt_rows
from drostudy.rl.grpo import RobustGRPOTrainer
from drostudy.rl.grpo_run import GRPORunConfig
from drostudy.rl.trainer import RobustRLOOTrainer, advantage_scale, prompt_values
from drostudy.runs import lora_config

# --trainer: (run config, TRL's trainer, drostudy's robust one)
TRAINERS = {
    "rloo": (rl.RLConfig, RLOOTrainer, RobustRLOOTrainer),
    "grpo": (GRPORunConfig, GRPOTrainer, RobustGRPOTrainer),
}


def make_trainer(cls, config: rl.RLConfig, rows: list[dict], reward, output_dir: str, **overrides):
    """`cls` on a fresh LoRA policy; `overrides` (divergence, radius) go into its TRL config."""
    policy, tokenizer = load_policy(config.model)
    return cls(
        model=policy,
        reward_funcs=reward,
        args=rl.trl_config(config, output_dir, disable_tqdm=True, **overrides),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(config, policy.config.num_hidden_layers),
    )


def time_step(trainer, batch: list[dict], seed: int) -> tuple[float, float]:
    """(wall s, process CPU s) of one training_step on `batch` from random state `seed`."""
    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.training_step(trainer.model, batch, None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    trainer.model.zero_grad(set_to_none=True)
    return wall, cpu


def weighting_seconds(config: rl.RLConfig, repeats: int = 200) -> float:
    """Median time of the robust part alone: per-prompt values and worst-case weights of one batch."""
    n = config.batch_size * config.num_generations
    rewards, kl = torch.randn(n), torch.randn(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        advantage_scale(prompt_values(rewards, config.num_generations, kl, config.beta), "tv", 0.2)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trainer", choices=sorted(TRAINERS), default="rloo")
    parser.add_argument("--policy", default="tiny-llama")
    parser.add_argument("--reward-model", default="tiny-bert")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    parser.add_argument("--radius", type=float, default=0.2, help="tv radius of the robust trainer")
    parser.add_argument("--out", default="", help="optional JSON file for the result")
    args = parser.parse_args(argv)
    config_cls, plain_cls, robust_cls = TRAINERS[args.trainer]
    config = config_cls(
        reward_model=args.reward_model,
        model=args.policy,
        batch_size=args.batch_size,
        num_generations=args.num_generations,
        max_completion_length=args.max_completion_length,
    )
    tokenizer = load_policy(config.model)[1]
    args_ = (tokenizer, config.max_length, config.system_prompt)
    rows = prompt_rows(load_suite()["train"], "math", config.batch_size * args.repeats, *args_, seed=0)
    reward = rl.load_reward(config)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            "plain": make_trainer(plain_cls, config, rows, reward, tmp, divergence=None, radius=0.0),
            "robust": make_trainer(
                robust_cls, config, rows, reward, tmp, divergence="tv", radius=args.radius
            ),
        }
        reward.model.to(trainers["plain"].accelerator.device)
        for trainer in trainers.values():
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which we bypass
        times = {name: {"wall": [], "cpu": []} for name in trainers}
        for r in range(args.repeats + 1):  # repeat 0 warms up (first-call allocations) and is dropped
            prompts = rows[(r % args.repeats) * config.batch_size :][: config.batch_size]
            batch = [row for row in prompts for _ in range(config.num_generations)]
            order = list(trainers) if r % 2 == 0 else list(trainers)[::-1]
            for name in order:
                wall, cpu = time_step(trainers[name], batch, seed=r)
                if r > 0:
                    times[name]["wall"].append(wall)
                    times[name]["cpu"].append(cpu)
    medians = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
    result = {
        "trainer": args.trainer,
        "policy": config.model,
        "batch": f"{config.batch_size} prompts x {config.num_generations} completions x "
        f"{config.max_completion_length} tokens",
        "repeats": args.repeats,
        "median_s": medians,
        "all_s": times,  # per repeat, in time order: shows load bursts that a median of few repeats hides
        "ratio_wall": medians["robust"]["wall"] / medians["plain"]["wall"],
        "ratio_cpu": medians["robust"]["cpu"] / medians["plain"]["cpu"],
        "weighting_s": weighting_seconds(config),
        "threads": torch.get_num_threads(),
    }
    result["weighting_share_of_plain_step"] = result["weighting_s"] / medians["plain"]["wall"]
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
