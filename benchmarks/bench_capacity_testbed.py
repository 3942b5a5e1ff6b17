"""CPU cost and seed need of the RL testbed's capacity axis (drostudy.capacity.testbed), one thread.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/bench_capacity_testbed.py [--spread-seeds 6]

For every capacity point (dim x steps) of the default sizes, on `--spread-seeds` seeds each: the CPU
seconds (time.process_time) of loading its bandits (one-off per dim: the features come from the
testbed's disk caches), and per run of each setting the training and the evaluation (pi_ref and the
trained policy, exactly over every held-out prompt) separately; each setting's OOD-mean correctness
against pi_ref's (paired interval; notebook 04 finds ordinary below it at dim 32, 200 steps); the spread
(sd over seeds) of each robust setting's paired OOD-mean correctness difference to ordinary and the seeds
its 95% half-width needs to reach TARGET, with notebook 04's committed spread of tv 0.2 at dim 32, 200
steps (20 seeds) beside it. Then the default design's CPU minutes (its seeds per dim; one process, one
thread: its wall minutes on a quiet core) and on 2 cores split over two processes. JSON on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import t as student

from drostudy.analysis.paired import paired_comparison, paired_sd, seeds_needed
from drostudy.capacity import testbed as cap
from drostudy.rl.testbed import evaluate_policy, run_minibatch
from drostudy.rl.testbed_experiments import Setting, subsample

TARGET = 0.01  # notebook 04's OOD-mean half-width target for the testbed
COMMITTED = Path(__file__).resolve().parent.parent / "results" / "04_rl_robustness.comparisons.csv"


def cpu(fn, *args):
    """(fn(*args), CPU seconds it took)."""
    start = time.process_time()
    out = fn(*args)
    return out, time.process_time() - start


def committed_spread() -> dict:
    """sd over seeds of tv 0.2 - ordinary (OOD-mean correctness) from notebook 04's committed interval."""
    table = pd.read_csv(COMMITTED)
    row = table[
        (table.stage == "rl_testbed")
        & (table.setting == "tv 0.2")
        & (table.baseline == "ordinary")
        & (table.split == "ood")
        & (table.domain == "mean")
        & (table.metric == "correct")
    ].iloc[0]
    n = int(row.n_seeds)
    half = (row.ci_high - row.ci_low) / 2
    return {"n_seeds": n, "half_width": half, "sd_diff": paired_sd(half, n)}


def train_once(config: cap.CapacityRun, train) -> tuple[torch.Tensor, float]:
    """(theta, training CPU seconds) of one planned run, on the prompts its seed draws."""
    (setting,) = [Setting(*s) for s in config.run.settings]
    bandit = dataclasses.replace(config.run.bandit, divergence=setting.divergence, radius=setting.radius)
    prompts = subsample(train, config.run.per_domain, config.seed)
    if config.level == "group":
        return cpu(cap.run_group_minibatch, prompts, bandit)
    (theta, _), seconds = cpu(run_minibatch, prompts, bandit)
    return theta, seconds


def ood_mean(theta, test, train_domains) -> float:
    table = evaluate_policy(theta, test)
    ood = table[(table.metric == "correct") & ~table.domain.isin(train_domains)]
    return float(ood.value.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spread-seeds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = cap.pick(False)
    configs = cap.plan(dataclasses.replace(sizes, seeds=args.spread_seeds, dim_seeds=()))
    loads, bandits = {}, {}
    for dim in sizes.dims:
        data = next(c.run.data for _, c in configs if c.run.data.dim == dim)
        bandits[dim], loads[dim] = cpu(cap.load, data, configs[0][1].eval_domains)
    train_domains = set(configs[0][1].run.data.train_domains)
    rows = []
    for label, config in configs:
        dim, steps = cap._point(config)
        train, test = bandits[dim]
        theta, train_s = train_once(config, train)
        start = time.process_time()
        outcome = ood_mean(theta, test, train_domains)
        reference = ood_mean(torch.zeros_like(theta), test, train_domains)  # every run evaluates pi_ref
        eval_s = time.process_time() - start
        point = cap.capacity(config)
        times = dict(train_s=train_s, eval_s=eval_s)
        rows.append(dict(point=point, setting=label, seed=config.seed, ood_correct=outcome, **times))
        rows[-1]["reference"] = reference
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["point", "seed"], columns="setting", values="ood_correct")
    costs = table.groupby(["point", "setting"], sort=False)[["train_s", "eval_s"]].mean().round(3)
    spread = {}
    for point, block in wide.groupby(level="point", sort=False):
        for setting in [s for s in block.columns if s != "ordinary"]:
            diff = block[setting] - block["ordinary"]
            sd = float(diff.std(ddof=1))
            spread[f"{point} | {setting}"] = {
                "mean_diff": round(float(diff.mean()), 4),
                "sd_diff": round(sd, 5),
                "seeds_for_target": seeds_needed(sd, TARGET),
                "half_width_at_default_seeds": round(
                    student.ppf(0.975, sizes.seeds - 1) * sd / math.sqrt(sizes.seeds), 4
                ),
            }
    below = {}
    for (point, setting), block in table.groupby(["point", "setting"], sort=False):
        by_seed = block.set_index("seed")
        c = paired_comparison(by_seed.ood_correct, by_seed.reference)
        below[f"{point} | {setting}"] = {
            "reference": round(float(block.reference.mean()), 4),
            "minus_reference": [round(v, 4) for v in (c.mean_diff, c.ci_low, c.ci_high)],
            "below": bool(c.ci_high < 0),
        }
    # CPU seconds of one seed's runs (every setting and step count) at each dim, times that dim's seeds
    table["dim"] = [int(p.split()[1]) for p in table.point]
    per_seed = table.groupby(["dim", "seed"])[["train_s", "eval_s"]].sum().sum(axis=1)
    per_dim = {d: float(v.mean()) * sizes.seeds_at(d) for d, v in per_seed.groupby(level="dim")}
    one_off = sum(loads.values())
    design = sum(per_dim.values()) + one_off
    out = {
        "machine": "shared (a make study ran beside it); CPU seconds, one thread, nice 19",
        "one_off_load_s": {f"dim {d}": round(s, 2) for d, s in loads.items()},
        "per_run_s": {f"{p} | {s}": r for (p, s), r in costs.to_dict("index").items()},
        "spread": spread,
        "ood_correct_vs_reference": below,
        "committed_tv0.2_dim32_200steps": committed_spread(),
        "default_design": {
            "seeds_per_dim": {d: sizes.seeds_at(d) for d in sizes.dims},
            "cpu_min_per_dim": {d: round(v / 60, 1) for d, v in per_dim.items()},
            "cpu_min_20_seeds_everywhere": round(
                (sum(v / sizes.seeds_at(d) for d, v in per_dim.items()) * 20 + one_off) / 60, 1
            ),
            "dims": sizes.dims,
            "steps": sizes.steps,
            "settings": [s.name for s, _ in cap.settings(sizes)],
            "runs": len(cap.plan(sizes)),
            "cpu_min": round(design / 60, 1),
            "wall_min_one_process": round(design / 60, 1),
            "wall_min_2_cores_two_processes": round(design / 120, 1),
        },
    }
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
