"""What the study's reproducible numerics cost: one DPO fast-path run (SmolLM2-135M + LoRA top 4) timed in
fresh processes with and without drostudy.threads.REPRODUCIBLE_NUMERICS, interleaved.

    python benchmarks/bench_numerics.py                  # 3 rounds of (plain, reproducible)
    python benchmarks/bench_numerics.py --rounds 1 --policy tiny-llama   # seconds, a quick check

Each process loads the model, trains and evaluates once to warm its caches, then times a second identical
run (`train_and_evaluate`, 3 steps of 16 pairs and 24 held-out pairs per domain, no generation). Printed:
each timing, the medians and their ratio, and whether the two settings gave the same accuracy (they need
not: the numerics differ in the last digits). Timings on a machine shared with other work are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from drostudy.threads import REPRODUCIBLE_NUMERICS

ONE_RUN = """
import dataclasses, json, sys, time
from drostudy.dpo import study
from drostudy.dpo.fast_run import FastDPORunConfig, train_and_evaluate
base = FastDPORunConfig(model=sys.argv[1], steps=3, n_train=48, n_eval=24, generate=False, seed=1)
config = dataclasses.replace(base, **study.method_overrides({"tv": 0.2})["tv"])
train_and_evaluate(config)
start = time.perf_counter()
metrics = train_and_evaluate(config)
accuracy = [v["accuracy"] for v in metrics["per_domain"].values()]
print(json.dumps({"s": time.perf_counter() - start, "accuracy": sum(accuracy) / len(accuracy)}))
"""


def timed(policy: str, reproducible: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in REPRODUCIBLE_NUMERICS}
    env |= REPRODUCIBLE_NUMERICS if reproducible else {}
    done = subprocess.run(
        [sys.executable, "-c", ONE_RUN, policy], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"plain": [], "reproducible": []}
    for round_ in range(args.rounds):
        for name in times:
            result = timed(args.policy, name == "reproducible")
            times[name].append(result["s"])
            print(
                f"round {round_}: {name:<12} {result['s']:.2f} s, mean accuracy {result['accuracy']:.4f}"
            )
    plain, repro = (statistics.median(times[k]) for k in ("plain", "reproducible"))
    print(f"median plain {plain:.2f} s, reproducible {repro:.2f} s: ratio {repro / plain:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
