"""CPU cost of the reward models' capacity axis (drostudy.capacity.reward) at its default sizes, one thread,
and the seeds and minutes its default design needs; printed as JSON.

Per capacity point (0, 1, 2 trainable MiniLM blocks): the one-off cache (the frozen part's output for
split A's training pool and for every test pair, CPU seconds per text), then a pilot of `--seeds` paired
seeds x (ordinary, tv 0.5, group tv 0.5) on split A, each run's training and evaluation timed apart (CPU
seconds, time.process_time) and its ID/OOD-mean accuracy kept. With `--pooling`, at 1 trainable block the
ordinary runs are repeated with the reward read from the mean over the last block's tokens (how
all-MiniLM-L6-v2 was trained: mean pooling, no BERT pooler) instead of the BERT pooler on [CLS], both with a
linear head on the mean and with the (pretrained) pooler's dense + tanh on it.

Seeds for the target: the sd of the paired OOD-mean difference (tv 0.5 - ordinary) from notebook 02's
committed comparisons (0 trainable blocks, splits A and C: sd = half-width * sqrt(n) / t) and from the
pilot (few seeds: a rough sd); the seeds needed are the least n with t(n-1) * sd / sqrt(n) <= the target.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/bench_capacity_reward.py --seeds 3 \
        --pooling linear,pooler --projected
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask

from drostudy.analysis.paired import paired_sd, seeds_needed
from drostudy.capacity import reward as cap
from drostudy.reward import fast
from drostudy.reward.cached_runs import CachedRuns
from drostudy.reward.data import pair_metrics

RESULTS = (
    Path(__file__).resolve().parent.parent / "results" / "02_reward_model_robustness.comparisons.csv"
)
TARGET = 0.02  # the OOD-mean half-width the capacity rows aim at (issue #25)
margins_of: dict[tuple, np.ndarray] = {}  # (setting, seed, frozen) -> the last timed run's test margins


def committed_sd() -> dict[str, float]:
    """sd of the paired OOD-mean difference of each committed `rm A`/`rm C` headline setting (0 blocks)."""
    table = pd.read_csv(RESULTS)
    part = table[
        table.stage.isin(["rm A", "rm C"])
        & (table.split == "ood")
        & (table.domain == "mean")
        & (table.baseline == "ordinary")
        & table.setting.isin(["tv 0.5", "group tv 0.5"])
    ]
    half = (part.ci_high - part.ci_low) / 2
    sd = [paired_sd(h, int(n)) for h, n in zip(half, part.n_seeds, strict=True)]
    return {
        f"{s} | {g}": round(float(v), 4) for s, g, v in zip(part.stage, part.setting, sd, strict=True)
    }


def mean_pooled(head: str):
    """A drop-in for drostudy.reward.fast.top_rewards reading the masked mean of the last block's tokens:
    head "linear" = the scalar head on the mean; "pooler" = the BERT pooler's dense + tanh, then the head."""

    def top_rewards(model, hidden, mask, frozen_layers):
        base = model.base_model
        attention = create_bidirectional_mask(
            config=base.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in base.encoder.layer[frozen_layers:]:
            hidden = layer(hidden, attention)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1)  # (B, H)
        if head == "pooler":
            pooled = base.pooler.activation(base.pooler.dense(pooled))
        return model.classifier(model.dropout(pooled)).squeeze(-1)

    return top_rewards


def projected_cls_block(layer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """drostudy.reward.fast.cls_block as it was before the fold: hidden (B, T, H), mask (B, T) -> (B, 1, H),
    [CLS]'s query against every position's projected key and value (O(T H^2) per block). Kept here as
    the benchmark's "before": the same function up to float rounding."""
    attn = layer.attention.self
    batch = hidden.shape[0]

    def heads(x):  # (B, T, H) -> (B, heads, T, head_size)
        return x.view(batch, x.shape[1], -1, attn.attention_head_size).transpose(1, 2)

    query, key, value = (
        heads(attn.query(hidden[:, :1])),
        heads(attn.key(hidden)),
        heads(attn.value(hidden)),
    )
    blocked = torch.zeros(mask.shape, dtype=hidden.dtype).masked_fill(
        mask == 0, torch.finfo(hidden.dtype).min
    )
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=blocked[:, None, None, :])
    attended = layer.attention.output(context.transpose(1, 2).reshape(batch, 1, -1), hidden[:, :1])
    return layer.output(layer.intermediate(attended), attended)


@contextlib.contextmanager
def pooling(head: str | None, projected: bool = False):
    """fast.top_rewards replaced by `mean_pooled(head)` inside (None: the RM's own, the pooler on [CLS]);
    `projected`: fast.cls_block replaced by `projected_cls_block` (the cost before the fold)."""
    original, block = fast.top_rewards, fast.cls_block
    if head is not None:
        fast.top_rewards = mean_pooled(head)
    if projected:
        fast.cls_block = projected_cls_block
    try:
        yield
    finally:
        fast.top_rewards, fast.cls_block = original, block


def timed_run(shared: CachedRuns, config) -> dict:
    """fast.run_cached's steps, each timed in CPU seconds: train and evaluate one config."""
    fast.reset_trainable(shared.model, shared.initial, config.seed)
    pairs = shared.train_pairs(config)
    chosen, rejected = shared.features.pairs(pairs)
    cpu = time.process_time()
    fast.train_on_cache(config, shared.model, pairs, chosen, rejected)
    train_cpu, cpu = time.process_time() - cpu, time.process_time()
    margins = fast.cached_margins(
        shared.model, *shared.features.pairs(shared.test), config.frozen_layers
    )
    eval_cpu = time.process_time() - cpu
    margins_of[(config.setting, config.seed, config.frozen_layers)] = margins
    acc = {
        d: v["accuracy"]
        for d, v in pair_metrics(margins, shared.test["domain"], shared.test["kind"])[
            "per_domain"
        ].items()
    }
    return {
        "train_cpu_s": round(train_cpu, 2),
        "eval_cpu_s": round(eval_cpu, 2),
        "id": round(float(np.mean([acc[d] for d in config.train_domains])), 4),
        "ood": round(float(np.mean([acc[d] for d in config.eval_domains])), 4),
    }


def point(sizes, frozen: int, seeds: int, pools: tuple[str, ...] = (), projected: bool = False) -> dict:
    """Cache and pilot runs at one capacity point on split A."""
    configs = [c for _, c in cap.plan(dataclasses.replace(sizes, frozen_layers=(frozen,), seeds=seeds))]
    configs = [c for c in configs if cap.split_of(c) == sizes.primary_split]
    shared = CachedRuns(configs[0])
    cpu = time.process_time()
    for config in configs:
        shared.features.pairs(shared.train_pairs(config))
    texts_train, train_cache, cpu = (
        len(shared.features._store),
        time.process_time() - cpu,
        time.process_time(),
    )
    shared.features.pairs(shared.test)
    texts_test, test_cache = len(shared.features._store) - texts_train, time.process_time() - cpu
    out = {
        "capacity": cap.capacity(configs[0]),
        "cache_cpu_s_per_text": round((train_cache + test_cache) / (texts_train + texts_test), 4),
        "cache_cpu_s": {"train pool A": round(train_cache, 1), "test": round(test_cache, 1)},
        "cache_texts": {"train pool A": texts_train, "test": texts_test},
        "cache_mb": round(sum(v.numel() * 4 for v in shared.features._store.values()) / 1e6),
        "runs": [],
    }
    torch.set_num_threads(1)
    for config in configs:
        out["runs"].append({"setting": config.setting, "seed": config.seed} | timed_run(shared, config))
        print(json.dumps(out["runs"][-1]), flush=True)
    if pools:
        for head in pools:
            for config in configs:
                if config.setting == "ordinary":
                    with pooling(head):
                        row = {"setting": f"ordinary, mean pooling + {head}", "seed": config.seed}
                        out["runs"].append(row | timed_run(shared, config))
                    print(json.dumps(out["runs"][-1]), flush=True)
    if projected:
        for config in configs:
            if config.setting == "ordinary":
                plain = margins_of[(config.setting, config.seed, frozen)]
                with pooling(None, projected=True):
                    row = {
                        "setting": "ordinary, projected cls_block (before the fold)",
                        "seed": config.seed,
                    }
                    row |= timed_run(shared, config)
                gap = np.abs(margins_of[(config.setting, config.seed, frozen)] - plain).max()
                out["runs"].append(row | {"max_margin_change": float(gap)})
                print(json.dumps(out["runs"][-1]), flush=True)
    return out


def summary(points: list[dict], sizes) -> dict:
    """Per-run CPU per capacity point, the pilot's paired OOD-mean differences and spread, the seeds
    needed and the default design's minutes (one process, one thread: wall = CPU)."""
    rows, sds, cost = [], {}, {}
    for p in points:
        runs = pd.DataFrame(p["runs"])
        plain = runs[~runs.setting.str.contains("pooling|projected")]
        cost[p["capacity"]] = {
            "train_cpu_s": round(float(plain.train_cpu_s.mean()), 2),
            "eval_cpu_s": round(float(plain.eval_cpu_s.mean()), 2),
        }
        wide = runs.pivot_table(index="seed", columns="setting", values=["id", "ood"])
        for setting in sorted(set(runs.setting) - {"ordinary"}):
            diff = wide["ood"][setting] - wide["ood"]["ordinary"]
            sd = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
            if setting in set(plain.setting):  # the headline settings; pooling rows are no design
                sds[f"{p['capacity']} | {setting}"] = round(sd, 4)
            rows.append(
                {
                    "capacity": p["capacity"],
                    "setting": setting,
                    "ood_diff": round(float(diff.mean()), 4),
                    "id_diff": round(float((wide["id"][setting] - wide["id"]["ordinary"]).mean()), 4),
                    "sd": round(sd, 4),
                    "id_ordinary": round(float(wide["id"]["ordinary"].mean()), 4),
                    "ood_ordinary": round(float(wide["ood"]["ordinary"].mean()), 4),
                }
            )
    committed = committed_sd()
    sd = max([*committed.values(), *[v for v in sds.values() if not math.isnan(v)]])
    seeds = seeds_needed(sd, TARGET)
    per_seed = sum(
        (cost[c]["train_cpu_s"] + cost[c]["eval_cpu_s"])
        * len(cap.splits(sizes))
        * (1 + len(sizes.levels))
        for c in cost
    )
    # cache, once per capacity point: every training text of both splits (A: math, code, knowledge; C: math,
    # reasoning; 4 domains of 510 pairs, 2 texts a pair) and every test text
    texts = 2 * 510 * 4 + points[0]["cache_texts"]["test"]
    cache = sum(p["cache_cpu_s_per_text"] * texts for p in points)
    return {
        "per_run_cpu_s": cost,
        "pilot": rows,
        "sd_paired_ood_mean": {"committed (0 blocks)": committed, "pilot": sds},
        "sd_assumed": round(sd, 4),
        "seeds_for_target": seeds,
        "target": TARGET,
        "default_minutes": {
            "seeds": sizes.seeds,
            "runs_cpu_min": round(per_seed * sizes.seeds / 60, 1),
            "cache_cpu_min": round(cache / 60, 1),
            "wall_min_on_2_cores": round((per_seed * sizes.seeds + cache) / 60, 1),
            "at_seeds_for_target": round((per_seed * seeds + cache) / 60, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="pilot seeds per capacity point")
    parser.add_argument("--frozen", default="6,5,4", help="capacity points (frozen blocks)")
    parser.add_argument(
        "--pooling", default="", help="mean-pooling heads run at 1 trainable block too: linear, pooler"
    )
    parser.add_argument(
        "--projected",
        action="store_true",
        help="ordinary at 1 block again with the cls_block before the fold (the cost before the speed-up)",
    )
    parser.add_argument("--levels", help="robust levels of the pilot (default both; '' = ordinary only)")
    parser.add_argument(
        "--points", help="a saved output's JSON: recompute its summary only, run nothing"
    )
    args = parser.parse_args()
    sizes = cap.pick(False, levels=args.levels)
    if args.points:
        points = json.loads(Path(args.points).read_text())["points"]
        print(json.dumps(summary(points, sizes), indent=1))
        return
    points = []
    for frozen in (int(f) for f in args.frozen.split(",")):
        at_one = frozen == cap.n_blocks(sizes.model) - 1
        heads = tuple(h for h in args.pooling.split(",") if h) if at_one else ()
        points.append(point(sizes, frozen, args.seeds, heads, args.projected and at_one))
    print(json.dumps({"points": points, "summary": summary(points, sizes)}, indent=1))


if __name__ == "__main__":
    main()
