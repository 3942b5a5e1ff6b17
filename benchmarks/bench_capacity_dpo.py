"""CPU seconds per run of DPO's capacity axis (drostudy.capacity.dpo) at each capacity point, and the wall
minutes and seeds of its default design on 2 cores.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_capacity_dpo.py     # SmolLM2-135M, a few minutes
    OMP_NUM_THREADS=1 python benchmarks/bench_capacity_dpo.py --policy tiny-llama --eval-pairs 2

Times are `time.process_time()` of one thread. Per LoRA depth of the points: a run's set-up (model load,
LoRA, the suite's rows at the default sizes, tokenisation), a training step of `batch_size` pairs for each
setting, the one-off trunk cache + reference log-probs per training pair (a cache per first trainable
block; a seed's pairs nest across points, so each depth fills its largest point's pairs once per seed), per
held-out pair the one-off cache + reference, the first run's evaluation (which also runs the reference's top
blocks for the KL) and every later run's. Steps and pairs are timed on a sample (`--train-pairs`,
`--eval-pairs` per domain) and scaled to each point. The design's wall time divides the CPU total by
`--speedup` (2 cores over 1 thread: an assumption, as in bench_dpo_study_size.py). Seeds for the
half-width target come from notebook 03's committed OOD-mean interval of its primary (tv 0.2 vs ordinary),
assuming the same spread at every point and for group_eg (03's default does not run group_eg).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import pandas as pd
import torch
from peft import get_peft_model

from drostudy.analysis.paired import paired_sd, seeds_needed
from drostudy.capacity import dpo
from drostudy.dpo import fast, fast_run, fast_train
from drostudy.dpo.run import build_data
from drostudy.io import seed_everything
from drostudy.models import load_policy
from drostudy.runs import lora_config

COMPARISONS = Path(__file__).resolve().parents[1] / "results" / "03_dpo_robustness.comparisons.csv"


def cpu(fn) -> tuple[float, object]:
    """(CPU seconds of this process, fn's value)."""
    start = time.process_time()
    value = fn()
    return time.process_time() - start, value


def measure(sizes: dpo.Sizes, lora_layers: int, args) -> dict:
    """One LoRA depth's costs (module docstring), on seed 0's pairs; the set-up at the largest point."""
    largest = max(dpo.point(p).n_train for p in sizes.points if dpo.point(p).lora_layers == lora_layers)
    config = dpo.base_config(sizes)
    config = dataclasses.replace(config, lora_layers=lora_layers, n_train=largest, steps=3, seed=0)
    seed_everything(0)
    load_s, (model, tokenizer) = cpu(lambda: load_policy(config.model))
    data_s, (train_rows, test) = cpu(lambda: build_data(config, tokenizer))
    layers = model.config.num_hidden_layers
    peft_s, model = cpu(lambda: get_peft_model(model, lora_config(config, layers)))
    encode_s, (pairs, kept) = cpu(lambda: fast.encode_pairs(tokenizer, train_rows, config.max_length))
    out = {"lora_layers": lora_layers, "first_trainable": max(0, layers - lora_layers)}
    out["setup_s_per_run"] = load_s + data_s + peft_s + encode_s
    pairs = pairs[: args.train_pairs]
    groups = torch.tensor(train_rows["group"])[kept][: args.train_pairs]
    cache = fast.TrunkCache(model, out["first_trainable"])
    out["trunk_s_per_train_pair"] = cpu(lambda: cache.fill([s for p in pairs for s in p]))[0] / len(
        pairs
    )
    out["reference_s_per_train_pair"] = cpu(lambda: cache.reference_logps(pairs))[0] / len(pairs)
    out["cache_mb_per_train_pair"] = sum(t.numel() * t.element_size() for t in cache._store.values())
    out["cache_mb_per_train_pair"] /= 2**20 * len(pairs)
    sample = dataclasses.replace(sizes, seeds=1, points=(f"{lora_layers}:{config.steps}:{len(pairs)}",))
    plan = dpo.plan(sample)  # every setting of the axis, on the same sample
    warm = dataclasses.replace(plan[0][1], steps=1)  # the first step of a process costs more: untimed
    fast_train.train(warm, model, cache, pairs, groups, False)
    for label, variant in plan:
        seconds, _ = cpu(lambda v=variant: fast_train.train(v, model, cache, pairs, groups, False))
        out[f"step_s {label}"] = seconds / variant.steps
    test_pairs = [
        fast.encode_pairs(tokenizer, rows, None)[0][: args.eval_pairs] for rows in test.values()
    ]
    n = sum(len(p) for p in test_pairs)
    out["eval_trunk_s_per_pair"] = (
        sum(cpu(lambda p=p: cache.fill([s for q in p for s in q]))[0] for p in test_pairs) / n
    )
    out["eval_reference_s_per_pair"] = (
        sum(cpu(lambda p=p: cache.reference_logps(p))[0] for p in test_pairs) / n
    )
    for timing in (
        "eval_s_per_pair_first_run",
        "eval_s_per_pair",
    ):  # reference states kept after the first
        seconds = [
            cpu(lambda p=p: fast_run.evaluate_pairs(model, cache, p, config.beta))[0] for p in test_pairs
        ]
        out[timing] = sum(seconds) / n
    out["domains"] = len(test_pairs)
    return out


def chain(sizes: dpo.Sizes, args) -> dict:
    """The shallowest depth's trunk states filled from the deepest's cache (dpo.ChainedTrunkCaches) against
    both filled directly, per training pair (seed 1's: not in measure's caches), and whether they are equal."""
    depths = sorted({dpo.point(p).lora_layers for p in sizes.points})
    config = dataclasses.replace(
        dpo.base_config(sizes), lora_layers=depths[0], n_train=args.train_pairs, seed=1
    )
    model, tokenizer = load_policy(config.model)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers))
    pairs = fast.encode_pairs(tokenizer, build_data(config, tokenizer)[0], config.max_length)[0]
    sequences = [s for p in pairs for s in p]
    first = {d: max(0, layers - d) for d in depths}
    chained = dpo.ChainedTrunkCaches(depths).get(model, config.model, first[depths[0]])
    chained_s, _ = cpu(lambda: chained.fill(sequences))
    direct = {d: fast.TrunkCache(model, first[d]) for d in depths}
    direct_s = sum(cpu(lambda c=c: c.fill(sequences))[0] for c in direct.values())
    equal = all(torch.equal(chained._store[s.ids], direct[depths[0]]._store[s.ids]) for s in sequences)
    return {
        "depths": depths,
        "chained_s_per_pair": chained_s / len(pairs),
        "direct_s_per_pair": direct_s / len(pairs),
        "states_equal": equal,
    }


def per_run(sizes: dpo.Sizes, costs: dict[int, dict]) -> pd.DataFrame:
    """CPU seconds of one run (set-up, training, later-run evaluation) per capacity point and setting."""
    rows = []
    for label, config in dpo.plan(dataclasses.replace(sizes, seeds=1)):
        m = costs[config.lora_layers]
        rows.append(
            {
                "capacity": dpo.capacity(config),
                "setting": label,
                "setup_s": m["setup_s_per_run"],
                "train_s": config.steps * m[f"step_s {label}"],
                "eval_s": m["domains"] * sizes.n_eval * m["eval_s_per_pair"],
            }
        )
    return pd.DataFrame(rows)


def caches_seconds(sizes: dpo.Sizes, costs: dict[int, dict], chained: bool) -> float:
    """CPU seconds of every cache of `sizes`' plan: per depth, its largest point's pairs per seed and the
    held-out pairs (trunk states, reference log-probs, the first evaluation's reference states); chained,
    a shallower depth's states cost only the blocks between it and the deepest (a share by block count)."""
    depths = sorted({dpo.point(p).lora_layers for p in sizes.points})
    deepest = costs[depths[-1]]["first_trainable"]
    total = 0.0
    for d in depths:
        m = costs[d]
        pairs = sizes.seeds * max(
            dpo.point(p).n_train for p in sizes.points if dpo.point(p).lora_layers == d
        )
        held_out = m["domains"] * sizes.n_eval
        share = (
            1.0
            if not chained or d == depths[-1]
            else (m["first_trainable"] - deepest) / max(1, m["first_trainable"])
        )
        total += pairs * (share * m["trunk_s_per_train_pair"] + m["reference_s_per_train_pair"])
        total += held_out * (share * m["eval_trunk_s_per_pair"] + m["eval_reference_s_per_pair"])
        total += held_out * (m["eval_s_per_pair_first_run"] - m["eval_s_per_pair"])
    return total


def design(
    sizes: dpo.Sizes, costs: dict[int, dict], runs: pd.DataFrame, speedup: float, reused=()
) -> dict:
    """CPU seconds and wall minutes of `sizes`' plan: its runs (less the `reused` (capacity, setting) of
    notebook 03), its caches (chained, as dpo.run fills them, and for comparison each filled directly),
    and the caches' memory."""
    names = {dpo.capacity(c) for _, c in dpo.plan(dataclasses.replace(sizes, seeds=1))}
    keep = runs[runs.capacity.isin(names)]
    keep = keep[[(c, s) not in set(reused) for c, s in zip(keep.capacity, keep.setting, strict=True)]]
    runs_s = sizes.seeds * float(keep[["setup_s", "train_s", "eval_s"]].to_numpy().sum())
    caches_s = caches_seconds(sizes, costs, chained=True)
    pairs = {
        d: sizes.seeds * max(dpo.point(p).n_train for p in sizes.points if dpo.point(p).lora_layers == d)
        + costs[d]["domains"] * sizes.n_eval
        for d in {dpo.point(p).lora_layers for p in sizes.points}
    }
    memory = sum(n * costs[d]["cache_mb_per_train_pair"] for d, n in pairs.items())
    return {
        "points": list(sizes.points),
        "seeds": sizes.seeds,
        "runs": sizes.seeds * len(keep),
        "runs_cpu_s": round(runs_s),
        "caches_cpu_s": round(caches_s),
        "caches_cpu_s_unchained": round(caches_seconds(sizes, costs, chained=False)),
        "cache_memory_gb": round(memory / 1024, 2),
        "minutes_on_2_cores": round((runs_s + caches_s) / speedup / 60, 1),
    }


def seeds_for_target(target: float) -> dict:
    """Seeds for `target` from 03's committed primary OOD-mean interval (tv 0.2 vs plain ordinary)."""
    table = pd.read_csv(COMPARISONS)
    row = table[
        (table.setting == "tv 0.2")
        & (table.baseline == "ordinary")
        & (table.split == "ood")
        & (table.domain == "mean")
        & (table.metric == "accuracy")
    ].iloc[0]
    half = (row.ci_high - row.ci_low) / 2
    return {
        "03_half_width": round(half, 4),
        "03_seeds": int(row.n_seeds),
        "seeds": seeds_needed(paired_sd(half, int(row.n_seeds)), target),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--train-pairs", type=int, default=32, help="training pairs timed (2 batches)")
    parser.add_argument("--eval-pairs", type=int, default=16, help="held-out pairs per domain timed")
    parser.add_argument("--target", type=float, default=0.03, help="OOD-mean paired half-width")
    parser.add_argument("--speedup", type=float, default=1.7, help="2 cores over 1 thread (assumed)")
    args = parser.parse_args()
    sizes = dataclasses.replace(dpo.DEFAULT, model=args.policy)
    costs = {
        d: measure(sizes, d, args) for d in sorted({dpo.point(p).lora_layers for p in sizes.points})
    }
    chained = chain(sizes, args)
    runs = per_run(sizes, costs)
    seeds = seeds_for_target(args.target)
    base = dpo.capacity(dpo.plan(dataclasses.replace(sizes, seeds=1))[0][1])
    reused = [(base, "ordinary"), (base, "tv 0.2")]
    designs = {}
    for n in sorted({seeds["seeds"], sizes.seeds, 11}):
        for points in (sizes.points, sizes.points[::2]):
            at = dataclasses.replace(sizes, seeds=n, points=points)
            designs[f"{n} seeds, {len(points)} points"] = design(at, costs, runs, args.speedup)
            designs[f"{n} seeds, {len(points)} points, 03's base runs reused"] = design(
                at, costs, runs, args.speedup, reused
            )
    print(
        json.dumps(
            {
                "policy": args.policy,
                "threads": torch.get_num_threads(),
                "costs": costs,
                "chained_fill": chained,
                "per_run_cpu_s": runs.round(1).to_dict("records"),
                "seeds_for_target": seeds | {"target": args.target},
                "designs": designs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
