"""CPU seconds of notebook 03's parts on the fast path, and the notebook time they imply at a given size.

    OMP_NUM_THREADS=1 python benchmarks/bench_dpo_study_size.py            # SmolLM2-135M, a few minutes
    OMP_NUM_THREADS=1 python benchmarks/bench_dpo_study_size.py --policy tiny-llama

Times are `time.process_time()` of one thread (CPU time: wall time means nothing on a shared machine):
a training step of batch `--batch-size` for ordinary DPO, TV and WDPO; the one-off trunk cache and reference
per training pair; per held-out pair the one-off cache + reference and the per-run evaluation, both the
first run's (which also computes the reference's top blocks at the held-out completions, for the KL) and
every later run's (which reads them from the cache); per prompt a greedy answer. The estimate for notebook
03 (`--seeds`, `--methods`, `--knob-runs`, `--steps`, `--n-eval`, 4 domains) divides the CPU total by
`--speedup` (what 2 cores give over 1 thread; an assumption, not measured here).
WDPO's RMS gradient norm and the DPO loss are printed too: WDPO_RADIUS is chosen from their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from peft import get_peft_model

from drostudy import evaluate
from drostudy.dpo import fast, fast_run, fast_train
from drostudy.dpo.run import build_data
from drostudy.io import seed_everything
from drostudy.models import load_policy
from drostudy.runs import lora_config


def cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(args) -> dict:
    config = fast_run.FastDPORunConfig(
        model=args.policy,
        train_domains=("math", "code"),
        eval_domains=("reasoning", "knowledge"),
        n_train=2 * args.batch_size,
        batch_size=args.batch_size,
        steps=2,
        n_eval=args.eval_pairs,
        lora_layers=4,
        max_length=112,
        learning_rate=3e-3,
    )
    seed_everything(0)
    model, tokenizer = load_policy(config.model)
    train_rows, test = build_data(config, tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers))
    cache = fast.TrunkCache(model, layers - config.lora_layers)
    pairs, kept = fast.encode_pairs(tokenizer, train_rows, config.max_length)
    groups = torch.tensor(train_rows["group"])[kept]
    out = {"policy": args.policy, "batch_pairs": args.batch_size, "threads": torch.get_num_threads()}
    once = cpu(lambda: cache.fill([s for p in pairs for s in p])) + cpu(
        lambda: cache.reference_logps(pairs)
    )
    out["train_once_s_per_pair"] = once / len(pairs)
    variants = {
        "ordinary": config,
        "tv": dataclasses.replace(config, loss="robust", divergence="tv", radius=0.2),
        "wdpo": dataclasses.replace(config, wdpo_radius=1.0),
    }
    for name, variant in variants.items():
        history = []
        out[f"step_s_{name}"] = cpu(
            lambda v=variant, h=history: h.extend(
                fast_train.train(v, model, cache, pairs, groups, False)
            )
        )
        out[f"step_s_{name}"] /= variant.steps
    out["wdpo_grad_norm"] = [h["wdpo/grad_norm"] for h in history]
    out["wdpo_dpo_loss"] = [h["dro/mean_loss"] for h in history]
    test_pairs = [fast.encode_pairs(tokenizer, rows, None)[0] for rows in test.values()]
    n = sum(len(p) for p in test_pairs)
    out["eval_once_s_per_pair"] = (
        sum(
            cpu(lambda p=p: (cache.fill([s for q in p for s in q]), cache.reference_logps(p)))
            for p in test_pairs
        )
        / n
    )
    for timing in ("eval_s_per_pair_first_run", "eval_s_per_pair"):  # the reference states kept after
        out[timing] = (
            sum(cpu(lambda p=p: fast_run.evaluate_pairs(model, cache, p, 0.1)) for p in test_pairs) / n
        )
    prompts = evaluate.unique_prompts(next(iter(test.values())), 2)
    out["generate_s_per_prompt"] = cpu(
        lambda: evaluate.answer_accuracy(model, tokenizer, prompts, 6)
    ) / len(prompts)
    return out


def estimate(m: dict, args) -> dict:
    """CPU seconds of notebook 03 at the given size and the wall minutes on 2 cores at `--speedup`."""
    pairs = args.steps * args.batch_size
    runs = [*args.methods, *["ordinary"] * args.knob_runs]
    per_run = [args.steps * m[f"step_s_{'wdpo' if name == 'wdpo' else 'tv'}"] for name in runs]
    evaluation = 4 * args.n_eval * m["eval_s_per_pair"]
    first = 4 * args.n_eval * (m["eval_once_s_per_pair"] + m["eval_s_per_pair_first_run"])
    total = (
        first
        - evaluation
        + args.seeds * (pairs * m["train_once_s_per_pair"] + sum(per_run) + len(per_run) * evaluation)
    )
    return {"cpu_s": total, "minutes_on_2_cores": total / args.speedup / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-pairs", type=int, default=16, help="held-out pairs per domain timed")
    parser.add_argument("--seeds", type=int, default=11)
    parser.add_argument("--methods", default="ordinary,tv", type=lambda s: s.split(","))
    parser.add_argument(
        "--knob-runs",
        type=int,
        default=4,
        help="ordinary DPO runs per seed along its knobs (BETAS, STEPS_GRID)",
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--n-eval", type=int, default=100, help="notebook 03's N_EVAL")
    parser.add_argument("--speedup", type=float, default=1.7, help="2 cores over 1 thread (assumed)")
    args = parser.parse_args()
    measured = measure(args)
    print(json.dumps(measured | {"notebook_03_estimate": estimate(measured, args)}, indent=2))


if __name__ == "__main__":
    main()
