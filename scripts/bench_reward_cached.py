"""CPU time of notebook 02's cached reward-model path: feature caching once, then one run per config.

    OMP_NUM_THREADS=1 python scripts/bench_reward_cached.py [--n-train 750] [--steps 141] [--runs 2]

Prints process (CPU) times, which are what sizes 02's grid on a shared machine; wall time is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from drostudy.reward.cached_runs import CachedRuns
from drostudy.reward.run import RMConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--n-train", type=int, default=750)
    parser.add_argument("--steps", type=int, default=141, help="optimiser steps (141: 3 passes of 750)")
    parser.add_argument("--frozen-layers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=2, help="timed runs after caching")
    args = parser.parse_args()
    base = RMConfig(
        model=args.model,
        n_train=args.n_train,
        n_eval=0,
        steps=args.steps,
        learning_rate=1e-4,
        frozen_layers=args.frozen_layers,
        engine="cached",
    )
    cpu, wall = time.process_time(), time.perf_counter()
    study = CachedRuns(base)
    study.features.pairs(study.test)
    for domains in (("math", "code", "knowledge"), ("reasoning", "knowledge", "safety")):
        study.features.pairs(study.train_pairs(dataclasses.replace(base, train_domains=domains)))
    print(
        f"load + cache {len(study.features._store)} texts: cpu {time.process_time() - cpu:.1f}s "
        f"wall {time.perf_counter() - wall:.1f}s",
        flush=True,
    )
    for seed in range(args.runs):
        cpu, wall = time.process_time(), time.perf_counter()
        metrics = study.train(dataclasses.replace(base, seed=seed, radius=0.2 * seed))
        print(
            f"run {seed}: cpu {time.process_time() - cpu:.1f}s wall {time.perf_counter() - wall:.1f}s "
            f"(train {metrics['timings']['train_s']:.1f}s eval {metrics['timings']['eval_s']:.1f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
