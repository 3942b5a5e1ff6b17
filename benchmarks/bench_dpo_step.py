"""Robust DPO vs ordinary DPO: time of one training step (forward + backward) in the same process.

    python benchmarks/bench_dpo_step.py                       # SmolLM2-135M + LoRA, the notebook's setting
    python benchmarks/bench_dpo_step.py --policy tiny-llama   # seconds, for a quick check

Both trainers see the same fixed batch of suite pairs; their steps alternate (A B A B ...) so that a change in
machine load hits both alike, and the medians are compared. Reported: the median step time of each, the
overhead ratio robust/ordinary - 1 (target < 3%), and the tokens per second of a step (non-pad tokens of the
batch, chosen and rejected, over the step time). On a shared machine the step times carry several percent of
noise, so the robust objective alone (weights and loss from fixed log-probs, the only work the subclass adds)
is timed too: `objective_overhead` = its fastest time over the ordinary median step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import torch

from drostudy.dpo.run import DPORunConfig, build_data, build_trainer
from drostudy.io import atomic_write_json
from drostudy.models import load_policy


def step_seconds(trainer, batch) -> float:
    """Wall time of one training step (forward, loss, backward) of `trainer` on `batch`."""
    trainer.model.train()
    start = time.perf_counter()
    trainer.compute_loss(trainer.model, dict(batch)).backward()  # the Trainer's step minus the optimiser
    elapsed = time.perf_counter() - start
    trainer.model.zero_grad(set_to_none=True)
    return elapsed


def objective_seconds(trainer, batch, repeats: int = 200) -> float:
    """Fastest time of the objective alone (per-pair losses -> weights -> loss, metrics) on fixed
    losses: the only work the robust trainer adds to TRL's step, measured free of the step's noise."""
    per_pair = torch.rand(batch["ref_chosen_logps"].numel(), requires_grad=True)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        trainer._objective(per_pair, batch.get("group"))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument(
        "--repeats", type=int, default=8, help="timed steps per trainer (after 1 warm-up)"
    )
    parser.add_argument("--divergence", default="tv")
    parser.add_argument("--radius", type=float, default=0.2)
    parser.add_argument("--out", default=None, help="write the result JSON here too")
    args = parser.parse_args(argv)

    base = DPORunConfig(
        model=args.policy,
        batch_size=args.batch_size,
        max_length=args.max_length,
        n_train=args.batch_size,
    )
    robust = dataclasses.replace(base, loss="robust", divergence=args.divergence, radius=args.radius)
    trainers, batch = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in (("ordinary", base), ("robust", robust)):
            model, tokenizer = load_policy(config.model)
            train, _ = build_data(dataclasses.replace(config, n_eval=1), tokenizer)
            trainers[name] = build_trainer(config, model, tokenizer, train, tmp)
            batch = batch or next(iter(trainers[name].get_train_dataloader()))
        times = {name: [] for name in trainers}
        for repeat in range(args.repeats + 1):
            for name, trainer in trainers.items():
                seconds = step_seconds(trainer, batch)
                if repeat > 0:  # the first step of each warms caches and allocators
                    times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    objective = objective_seconds(trainers["robust"], batch)
    tokens = int(batch["attention_mask"].sum())
    result = {
        "policy": args.policy,
        "batch_pairs": args.batch_size,
        "tokens_per_step": tokens,
        "median_step_s": median,
        "overhead": median["robust"] / median["ordinary"] - 1.0,
        # the robust objective's own cost over the ordinary step: the overhead without the load noise
        "objective_s": objective,
        "objective_overhead": objective / median["ordinary"],
        "tokens_per_s": {name: tokens / s for name, s in median.items()},
        "robust": f"{args.divergence} radius {args.radius}",
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
