"""Reward-model training step time: robust against ordinary, in the same process, interleaved, medians.

    python benchmarks/bench_rm_step.py [--model minilm-l6] [--batch-size 16] [--truncate-length 128] [--reps 20]

One step = forward of the 2B texts, the loss, backward, AdamW step. "ordinary" is TRL's own
RewardTrainer.compute_loss; each robust variant is RobustRewardTrainer.compute_loss (worst-case weights over
the minibatch). The engines: "trl" (the whole model, frozen_layers=0) and "cached" (the notebook's fast path:
frozen lower layers read from a cache, only the top trained). Steps of all variants alternate in a shuffled
order within each repetition, so load changes on a shared machine hit every variant alike; the report is the
median step time of each variant and its ratio to ordinary (the issue asks robust < 1.03 x ordinary).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time

import numpy as np
import torch
from datasets import Dataset
from trl import RewardTrainer

from drostudy.losses import bradley_terry_loss, robust_bradley_terry_loss
from drostudy.models import load_reward_model
from drostudy.reward import data as reward_data
from drostudy.reward import fast as reward_cached
from drostudy.reward import run as reward_run
from drostudy.reward import trainer as reward

VARIANTS = {"tv": 0.2, "kl": 0.5, "chi2": 0.5, "cvar": 0.2}  # divergence: radius (cvar: alpha)
DOMAINS = ("math", "code", "knowledge")


def batch_pairs(n: int) -> Dataset:
    """n real training pairs of the suite (falls back to synthetic text when the suite is unavailable)."""
    try:
        from drostudy.data import load_suite, select

        return select(load_suite()["train"], domains=DOMAINS, n=n, seed=0)
    except Exception as err:  # noqa: BLE001 - a benchmark still runs without the suite
        print(f"suite unavailable ({err}); using synthetic pairs")
        words = "the answer is a number between one and ten given the premises above".split()
        return Dataset.from_list(
            [
                {
                    "id": str(i),
                    "prompt": " ".join(words * 8),
                    "chosen": "7",
                    "rejected": "3",
                    "domain": DOMAINS[i % 3],
                }
                | {"kind": "wrong_answer"}
                for i in range(n)
            ]
        )


def trl_steps(args, pairs: Dataset, tmp: str) -> dict:
    """Step closures of the TRL engine: ordinary (TRL) and each robust divergence."""
    model, tok = load_reward_model(args.model)
    config = reward_run.RMConfig(
        train_domains=DOMAINS, batch_size=args.batch_size, truncate_length=args.truncate_length
    )
    data = reward_data.tokenize_pairs(pairs, tok, args.truncate_length, DOMAINS)
    kwargs = dict(
        model=model, args=reward.trl_args(config, tmp), train_dataset=data, processing_class=tok
    )
    trainers = {"ordinary": RewardTrainer(**kwargs)}
    for divergence, radius in VARIANTS.items():
        trainers[divergence] = reward.RobustRewardTrainer(**kwargs, divergence=divergence, radius=radius)
    batch = next(iter(trainers["tv"].get_train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    ordinary_batch = {k: v for k, v in batch.items() if k != "group"}

    def step(trainer, inputs):
        loss = trainer.compute_loss(model, dict(inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {
        name: (lambda t=t, b=(ordinary_batch if name == "ordinary" else batch): step(t, b))
        for name, t in trainers.items()
    }


def cached_steps(args, pairs: Dataset) -> dict:
    """Step closures of the cached engine (top layer + head on cached features of the frozen layers)."""
    config = reward_run.RMConfig(
        model=args.model, train_domains=DOMAINS, frozen_layers=args.frozen_layers, engine="cached"
    )
    model, tok, _ = reward_cached.load_cached_model(config)
    features = reward_cached.FrozenFeatures(model, tok, args.frozen_layers, args.truncate_length)
    chosen, rejected = features.pairs(pairs)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()

    def step(divergence, radius):
        rc, rr = reward_cached.pair_rewards(model, chosen, rejected, args.frozen_layers)
        if divergence is None:
            loss = bradley_terry_loss(rc, rr).mean()
        else:
            loss = robust_bradley_terry_loss(rc, rr, divergence, radius).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = {"ordinary": lambda: step(None, 0.0)}
    return steps | {d: (lambda d=d, r=r: step(d, r)) for d, r in VARIANTS.items()}


def interleaved_medians(steps: dict, reps: int, warmup: int = 2, seed: int = 0) -> dict[str, float]:
    """Median seconds per step of each closure, run in a shuffled order within each repetition."""
    rng = random.Random(seed)
    times = {name: [] for name in steps}
    for rep in range(warmup + reps):
        for name in rng.sample(list(steps), len(steps)):
            start = time.perf_counter()
            steps[name]()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def loss_head_medians(batch_size: int, reps: int = 300) -> dict[str, float]:
    """Median seconds of the only code that differs between the variants: the loss from the rewards (B,)
    (weights, weighted sum, metrics) and its backward. Immune to load swings over a multi-second step."""
    chosen = torch.randn(batch_size, requires_grad=True)
    rejected = torch.randn(batch_size)

    def head(divergence, radius):
        if divergence is None:
            loss = bradley_terry_loss(chosen, rejected).mean()
        else:
            loss = robust_bradley_terry_loss(chosen, rejected, divergence, radius).loss
        loss.backward()

    steps = {"ordinary": lambda: head(None, 0.0)} | {
        d: (lambda d=d, r=r: head(d, r)) for d, r in VARIANTS.items()
    }
    return interleaved_medians(steps, reps, warmup=20)


def report(engine: str, medians: dict[str, float], head: dict[str, float] | None = None) -> dict:
    base = medians["ordinary"]
    ratios = {name: m / base for name, m in medians.items()}
    print(f"\n[{engine}] median step time (ms) and ratio to ordinary")
    for name, m in medians.items():
        print(f"  {name:9s} {1e3 * m:9.2f} ms   x{ratios[name]:.4f}")
    worst = max(r for n, r in ratios.items() if n != "ordinary")
    print(f"  worst robust/ordinary ratio: {worst:.4f} ({'<' if worst < 1.03 else '>='} 1.03)")
    out = {"median_s": medians, "ratio": ratios, "worst_ratio": worst}
    if (
        head is not None
    ):  # step = shared part + head: the robust step's extra cost is the head's extra cost
        extra = {n: (head[n] - head["ordinary"]) / base for n in head if n != "ordinary"}
        print(
            "  loss-head overhead as a fraction of the ordinary step: "
            + ", ".join(f"{n} {100 * e:.3f}%" for n, e in extra.items())
        )
        out["head_median_s"], out["head_overhead_fraction"] = head, extra
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--truncate-length", type=int, default=128)
    parser.add_argument(
        "--frozen-layers", type=int, default=5, help="cached engine: frozen lower layers"
    )
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--engines", default="trl,cached")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(args.threads)
    pairs = batch_pairs(args.batch_size)
    out = {"args": vars(args)}
    head = loss_head_medians(args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        for engine in args.engines.split(","):
            steps = trl_steps(args, pairs, tmp) if engine == "trl" else cached_steps(args, pairs)
            out[engine] = report(engine, interleaved_medians(steps, args.reps), head)
    if args.out:
        from drostudy.io import atomic_write_json

        atomic_write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()
