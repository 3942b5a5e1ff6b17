"""Time the real-data pipeline of the log-linear RL testbed and the paired robust-vs-plain study it runs.

    python benchmarks/bench_testbed.py [--seeds 20] [--steps 200] [--per-domain 300] [--smollm2-sample 48]

Reports (JSON on stdout, and per-seed tables under --out): the time of the candidate sets, of the MiniLM
features (the first run embeds, later runs read the cache), of SmolLM2's reference log-probs on a sample of
candidates (extrapolated to all candidates: the cost of the "smollm2" reference), of loading the bandits,
of the paired runs (plain and every radius, every seed) and of the convergence table; and the paired
difference robust - plain of the OOD-mean expected correctness (and learned reward, KL) with its 95%
t-interval over seeds. Process CPU time is given next to wall time: on a shared machine it is the fairer one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from drostudy import evaluate
from drostudy.analysis.results import t_interval
from drostudy.models import load_policy
from drostudy.rl import testbed_data, testbed_features
from drostudy.rl.testbed import BanditConfig
from drostudy.rl.testbed_experiments import convergence_table, paired_runs

SETTINGS = {"plain": ("tv", 0.0), "tv-0.1": ("tv", 0.1), "tv-0.2": ("tv", 0.2), "kl-0.5": ("kl", 0.5)}


def timed(label: str, times: dict, fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    times[label] = {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
    }
    return out


def smollm2_sample(table, n: int, times: dict) -> None:
    """SmolLM2 log-probs of n candidates, uncached, and the extrapolation to every candidate."""
    rows = table.sample(n, random_state=0)
    model, tok = timed("smollm2_load", times, load_policy)
    chats = [
        [{"role": "system", "content": testbed_features.SYSTEM_PROMPT}, {"role": "user", "content": p}]
        for p in rows.prompt
    ]
    timed(
        "smollm2_sample",
        times,
        evaluate.reference_logps,
        model,
        tok,
        chats,
        list(rows.response),
        model,
        16,
    )
    times["smollm2_all_estimate_s"] = round(times["smollm2_sample"]["wall_s"] * len(table) / n, 1)


def paired_differences(table, settings) -> dict:
    """{setting: {metric: (mean, half-width)}} of the per-seed OOD-mean difference setting - plain."""
    ood = table[(table.split == "ood") & (table.domain == "mean")]
    wide = ood.pivot_table(index=["seed", "metric"], columns="setting", values="value")
    out = {}
    for name in settings:
        if name != "plain":
            diff = (wide[name] - wide["plain"]).unstack("metric")
            out[name] = {m: [round(v, 4) for v in t_interval(diff[m].to_numpy())] for m in diff}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--per-domain", type=int, default=300)
    parser.add_argument("--smollm2-sample", type=int, default=48)
    parser.add_argument("--out", default="runs/bench_testbed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    times, data_config = {}, testbed_data.DataConfig()
    tables = timed(
        "candidates_test", times, testbed_data.candidates, "test", testbed_data.DOMAINS, data_config
    )
    timed(
        "features_test",
        times,
        testbed_features.reward_features,
        list(tables.prompt),
        list(tables.response),
    )
    if args.smollm2_sample:
        smollm2_sample(tables, args.smollm2_sample, times)
    train, test, _ = timed("load_bandits", times, testbed_data.load_bandits, data_config)
    config = BanditConfig(steps=args.steps)
    table = timed(
        "paired_runs",
        times,
        paired_runs,
        train,
        test,
        config,
        SETTINGS,
        tuple(range(args.seeds)),
        args.per_domain,
    )
    gaps, optimum = timed(
        "convergence",
        times,
        convergence_table,
        train,
        BanditConfig(steps=args.steps, radius=0.2),
        (8, 32, 128),
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "paired.csv", index=False)
    gaps.to_csv(out / "convergence.csv", index=False)
    last = gaps[gaps.step == gaps.step.max()].set_index("batch_size").gap.round(4).to_dict()
    report = {
        "sizes": {
            "train_prompts": len(train.mask),
            "test_prompts": len(test.mask),
            "K": train.mask.shape[1],
            "dim": train.phi.shape[-1],
            "seeds": args.seeds,
            "steps": args.steps,
            "per_domain": args.per_domain,
        },
        "times": times,
        "ood_mean_difference_vs_plain": paired_differences(table, SETTINGS),
        "convergence": {"optimum": round(optimum, 4), "final_gap_by_batch": last},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
