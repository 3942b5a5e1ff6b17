"""What order independence costs DPO's trunk cache (drostudy.dpo.fast.TrunkCache): its states and reference
log-probs per sequence, computed alone (batch_size 1, unpadded: the default) or in padded batches of 32
sorted by length (the old path, whose values depended on what the cache lacked when they were computed).

    OMP_NUM_THREADS=1 python benchmarks/bench_dpo_trunk_fill.py            # SmolLM2-135M, about 2 minutes
    OMP_NUM_THREADS=1 python benchmarks/bench_dpo_trunk_fill.py --policy tiny-llama

Takes notebook 03's default sizes (seed 0's training pairs and the held-out pairs of its 4 domains, up to
`--sequences` of them), fills a fresh cache (trunk states, then reference log-probs) once per mode,
alternating `--repeats` times so that load changes hit both alike, and prints CPU seconds
(`time.process_time()`) per sequence: the median over repeats. It also reports how far the two modes'
values differ (the last-digit drift the old path had between orders).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch
from peft import get_peft_model

from drostudy.dpo import fast, study
from drostudy.dpo.run import build_data
from drostudy.models import load_policy
from drostudy.runs import lora_config


def fill_seconds(model, first: int, pairs, batch_size: int) -> tuple[float, fast.TrunkCache]:
    """CPU seconds to fill a fresh cache's states and reference log-probs of `pairs`, and the cache."""
    cache = fast.TrunkCache(model, first, batch_size=batch_size)
    start = time.process_time()
    cache.fill([s for p in pairs for s in p])
    cache.reference_logps(pairs)
    return time.process_time() - start, cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--sequences", type=int, default=400, help="at most this many (2 per pair)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = dataclasses.replace(study.PRESETS["default"], model=args.policy)
    config = study.base_config(sizes, "math,code", seed=0)
    model, tokenizer = load_policy(config.model)
    train, test = build_data(config, tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers)).eval()
    first = max(0, layers - config.lora_layers)
    pairs = fast.encode_pairs(tokenizer, train, None)[0]
    for rows in test.values():
        pairs += fast.encode_pairs(tokenizer, rows, None)[0]
    pairs = pairs[: args.sequences // 2]
    times: dict[int, list[float]] = {1: [], 32: []}
    caches = {}
    for _ in range(args.repeats):
        for batch_size in times:
            seconds, caches[batch_size] = fill_seconds(model, first, pairs, batch_size)
            times[batch_size].append(seconds)
    n = 2 * len(pairs)
    alone, batched = (statistics.median(times[b]) / n for b in (1, 32))
    states = [
        float((caches[1]._store[s.ids] - caches[32]._store[s.ids]).abs().max()) for p in pairs for s in p
    ]
    ref = [
        float(a - b)
        for a, b in zip(caches[1].reference_logps(pairs), caches[32].reference_logps(pairs), strict=True)
        for a, b in zip(a, b, strict=True)
    ]
    report = {
        "policy": args.policy,
        "sequences": n,
        "mean_tokens": sum(len(s.ids) for p in pairs for s in p) / n,
        "cpu_s_per_sequence_alone": alone,
        "cpu_s_per_sequence_batched_32": batched,
        "alone_over_batched": alone / batched,
        "max_abs_state_diff": max(states),
        "max_abs_reference_logp_diff": max(abs(d) for d in ref),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
