"""Ordinary training's regularisation knobs on notebook 02's split A: the curves its knob grids are chosen from.

    OMP_NUM_THREADS=1 python scripts/bench_reward_knobs.py [--seeds 4] [--weight-decay 3,10,30,100]
        [--steps 47,94,188,564] [--label-smoothing 0.05,0.1,0.2,0.3,0.4] [--robust tv:0.2,tv:0.9]

At the default sizes (drostudy.reward.study), prints per setting the ID-mean and OOD-mean accuracy over the
seeds and the CPU and wall seconds of a run, then per knob how many robust runs its curve brackets on their
seed (drostudy.analysis.matched): a grid should bracket the robust settings' ID accuracy on most seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import pandas as pd

from drostudy.analysis import matched
from drostudy.analysis import reward_grid as rg
from drostudy.config import setting_label
from drostudy.reward import study
from drostudy.reward.cached_runs import CachedRuns
from drostudy.threads import torch_threads


def numbers(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--weight-decay", default="3,10,30,100")
    parser.add_argument("--steps", default="47,94,188,564")
    parser.add_argument("--label-smoothing", default="0.05,0.1,0.2,0.3,0.4")
    parser.add_argument("--robust", default="tv:0.2,tv:0.9", help="divergence:radius,... compared")
    args = parser.parse_args()
    sizes = study.pick(False)
    base = dataclasses.replace(study.base_config(sizes), **study.split_domains("A"))
    grids = {
        "weight_decay": numbers(args.weight_decay),
        "steps": numbers(args.steps, int),
        "label_smoothing": numbers(args.label_smoothing),
    }
    robust = [
        dict(divergence=d, radius=float(r)) for d, r in (x.split(":") for x in args.robust.split(","))
    ]
    settings = [{}, *robust] + [{k: v} for k, values in grids.items() for v in values]
    cpu, wall = time.process_time(), time.perf_counter()
    shared = CachedRuns(base)
    for seed in range(args.seeds):
        shared.features.pairs(shared.train_pairs(dataclasses.replace(base, seed=seed)))
    shared.features.pairs(shared.test)
    print(
        f"feature cache: {time.process_time() - cpu:.0f} s CPU, {time.perf_counter() - wall:.0f} s wall"
    )
    runs, costs = [], []
    with torch_threads(1):
        for fields in settings:
            for seed in range(args.seeds):
                config = dataclasses.replace(base, seed=seed, **fields)
                cpu, wall = time.process_time(), time.perf_counter()
                metrics = shared.train(config)
                label = f"rm A | {study.name(config, base)}"
                runs.append(metrics | {"label": label, "config": dataclasses.asdict(config)})
                costs.append(
                    (label.split(" | ")[1], time.process_time() - cpu, time.perf_counter() - wall)
                )
    rows = rg.result_rows(runs)
    means = rows[rows.domain == "mean"].pivot_table(index="setting", columns="split", values="value")
    cost = pd.DataFrame(costs, columns=["setting", "cpu_s", "wall_s"]).groupby("setting").mean()
    print(means.join(cost).round(4).to_string())
    defaults = {"weight_decay": 0.0, "steps": float(sizes.steps), "label_smoothing": 0.0}
    for knob, values in grids.items():
        curve = {"ordinary": defaults[knob]} | {
            setting_label("ordinary", **{knob: v}): v for v in values
        }
        part = rg.knob_rows(rows, "rm A", curve)
        print(knob, matched.matched_diagnostics(part, curve, knob_name=knob).to_string(), sep="\n")


if __name__ == "__main__":
    main()
