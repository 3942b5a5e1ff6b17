"""The fast DPO path (drostudy.dpo.fast) against RobustDPOTrainer: step time on the same batch, the levers
one at a time, evaluation pairs; and with --spread, how far the peers' weights move from uniform.

    python benchmarks/bench_dpo_fast.py                       # SmolLM2-135M + LoRA on the top 4 layers
    python benchmarks/bench_dpo_fast.py --policy tiny-llama   # seconds, for a quick check
    python benchmarks/bench_dpo_fast.py --spread              # + peer weight spread during training

Steps (forward, loss, backward; medians of `--repeats` after one warm-up, alternating so that load changes
hit all alike) on the trainer's first batch:
- `trainer`: RobustDPOTrainer.compute_loss + backward (TRL: every block, LM head at every position on CPU);
- `head_only`: fast path from the embeddings (no trunk cache), LM head at completion positions only;
- `cache_only`: cached trunk, but the LM head and log-softmax at every position;
- `fast`: cached trunk + LM head at completion positions (drostudy.dpo.fast).
One-off costs per pair: the trunk states (`trunk_fill_s_per_pair`) and the cached reference log-probs.
Evaluation (accuracy, margin, KL of `--eval-pairs` held-out pairs): drostudy.evaluate.sequence_stats as the
slow path runs it vs fast_run.evaluate_pairs on cached states (plus its one-off trunk and reference cost).
--spread trains ordinary DPO on the fast path and, at a few steps, reports for batches of `--spread-batch`
pairs the spread of the per-pair losses and of the Dr. DPO / KLDPO / group weights (max weight * n, ESS / n).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import torch

from drostudy import evaluate
from drostudy import losses as dro_losses
from drostudy.dpo import fast, fast_run, fast_train
from drostudy.dpo.fast_train import FastDPORunConfig
from drostudy.dpo.run import DPORunConfig, build_data, build_trainer
from drostudy.io import atomic_write_json
from drostudy.models import load_policy


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def full_head_logps(model, batch: fast.Batch, first: int) -> torch.Tensor:
    """Summed completion log-probs (N,) with the LM head and log-softmax at every position (the lever off)."""
    lm, backbone = fast._parts(model)
    hidden = fast.run_blocks(backbone, batch.hidden, batch.attention, backbone.layers[first:])
    logp = lm.lm_head(backbone.norm(hidden)[:, :-1]).log_softmax(-1)  # (N, T-1, V)
    scored = batch.labels != -100
    token = logp.gather(-1, batch.labels.clamp(min=0)[..., None])[..., 0]
    return (token * scored).sum(1)


def step_variants(trainer, batch, pairs, config, layers: int) -> dict:
    """{name: step function} on the same batch (module docstring)."""
    model, first = trainer.model, max(0, layers - config.lora_layers)
    ref = (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    cached, embeddings = fast.TrunkCache(model, first), fast.TrunkCache(model, 0)
    cached.fill([s for p in pairs for s in p])
    embeddings.fill([s for p in pairs for s in p])

    def trainer_step():
        trainer.compute_loss(model, dict(batch)).backward()

    def fast_step(cache):
        return lambda: fast_train.objective(config, fast.pair_logps(model, cache, pairs), ref)[
            0
        ].loss.backward()

    def cache_only():
        logps = full_head_logps(
            model, cached.batch([p[0] for p in pairs] + [p[1] for p in pairs]), first
        )
        fast_train.objective(config, logps.chunk(2), ref)[0].loss.backward()

    steps = {"trainer": trainer_step, "head_only": fast_step(embeddings), "cache_only": cache_only}
    return steps | {"fast": fast_step(cached)}


def check_same_batch(trainer, batch, pairs, config) -> float:
    """Relative difference of the fast loss to the trainer's on this batch (the benchmark's sanity check)."""
    ids = [list(p[0].ids) for p in pairs] + [list(p[1].ids) for p in pairs]
    for row, seq in zip(batch["input_ids"].tolist(), ids, strict=True):
        assert row[: len(seq)] == seq, "the fast path does not see the trainer's batch"
    with torch.no_grad():
        slow = float(trainer.compute_loss(trainer.model, dict(batch)))
        ref = (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
        quick = float(
            fast_train.objective(
                config,
                fast.pair_logps(
                    trainer.model,
                    fast.TrunkCache(
                        trainer.model, trainer.model.config.num_hidden_layers - config.lora_layers
                    ),
                    pairs,
                ),
                ref,
            )[0].loss
        )
    return abs(quick - slow) / abs(slow)


def eval_times(model, tokenizer, rows, config, layers: int) -> dict:
    """Seconds per held-out pair: slow sequence_stats vs cached evaluate_pairs (and its one-off costs)."""
    prompts = [r["prompt"] for r in rows]
    slow = _timed(
        lambda: (
            evaluate.sequence_stats(model, tokenizer, prompts, [r["chosen"] for r in rows]),
            evaluate.sequence_stats(
                model, tokenizer, prompts, [r["rejected"] for r in rows], with_reference=False
            ),
        )
    )
    pairs, _ = fast.encode_pairs(tokenizer, rows, None)
    cache = fast.TrunkCache(model, max(0, layers - config.lora_layers))
    fill = _timed(lambda: cache.fill([s for p in pairs for s in p]))
    ref = _timed(lambda: cache.reference_logps(pairs))
    cached = _timed(lambda: fast_run.evaluate_pairs(model, cache, pairs, config.beta))
    n = len(pairs)
    return {
        "eval_pairs": n,
        "slow_s_per_pair": slow / n,
        "fast_s_per_pair": cached / n,
        "fast_once_s_per_pair": (fill + ref) / n,
        "eval_speedup": slow / cached,
        "eval_speedup_with_fill": slow / (cached + fill + ref),
    }


def weight_spread(per_example: torch.Tensor, groups: torch.Tensor, settings: dict) -> dict:
    """{peer: (max weight * n, ESS / n)} of one batch's per-pair losses (n,)."""
    n, out = per_example.numel(), {}
    for name, loss in settings.items():
        w = loss(per_example, groups).weights
        out[name] = (float(w.max() * n), float(1 / (w * w).sum() / n))
    return out


def spread(config: DPORunConfig, checkpoints: list[int], batch_size: int) -> dict:
    """Train ordinary DPO on the fast path; at each checkpoint, the peers' weight spread on the per-pair
    losses of every training batch of `batch_size` pairs (means over batches)."""
    from peft import get_peft_model

    from drostudy.runs import lora_config

    model, tokenizer = load_policy(config.model)
    rows, _ = build_data(dataclasses.replace(config, n_eval=1), tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers))
    cache = fast.TrunkCache(model, layers - config.lora_layers)
    pairs, kept = fast.encode_pairs(tokenizer, rows, config.max_length)
    groups = torch.tensor(rows["group"])[kept]
    ref = cache.reference_logps(pairs)
    settings = {
        f"dr_dpo beta'={b}": (lambda x, g, b=b: dro_losses.dr_dpo_loss(x, b))
        for b in (0.01, 0.03, 0.1, 1.0)
    }
    settings |= {
        f"kldpo tau={t}": (lambda x, g, t=t: dro_losses.kldpo_loss(x, t))
        for t in (0.003, 0.01, 0.03, 0.1, 1.0)
    }
    settings |= {
        f"robust {d} radius={r}": (lambda x, g, d=d, r=r: dro_losses.robust_loss(x, d, r))
        for d, r in (("tv", 0.2), ("kl", 0.1), ("chi2", 0.5))
    }
    result = {}

    def measure(step: int) -> None:
        if step not in checkpoints:
            return
        with torch.no_grad():
            logps = [fast.pair_logps(model, cache, pairs[i : i + 16]) for i in range(0, len(pairs), 16)]
        chosen, rejected = (torch.cat(side) for side in zip(*logps, strict=True))
        per_pair = dro_losses.dpo_loss(chosen, rejected, *ref, beta=config.beta)[0]
        batches = fast_train.batch_order(len(pairs), batch_size, len(pairs) // batch_size, config.seed)
        stats = [weight_spread(per_pair[b], groups[b], settings) for b in batches]
        means = {
            k: [round(statistics.mean(s[k][j] for s in stats), 3) for j in (0, 1)] for k in settings
        }
        gaps = [
            float((per_pair[b][groups[b] == 0].mean() - per_pair[b][groups[b] == 1].mean()).abs())
            for b in batches
        ]
        result[f"step {step}"] = {
            "loss_mean": float(per_pair.mean()),
            "loss_std_within_batch": statistics.mean(float(per_pair[b].std()) for b in batches),
            "group_mean_gap": statistics.mean(gaps),
            "max_w_times_n, ess_over_n": means,
        }

    measure(0)
    fast_train.train(
        dataclasses.replace(config, steps=max(checkpoints)), model, cache, pairs, groups, False, measure
    )
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed steps per variant (after 1 warm-up)"
    )
    parser.add_argument("--eval-pairs", type=int, default=32, help="held-out pairs timed in evaluation")
    parser.add_argument("--spread", action="store_true", help="also measure the peers' weight spread")
    parser.add_argument("--spread-batch", type=int, default=16)
    parser.add_argument("--out", default=None, help="write the result JSON here too")
    args = parser.parse_args(argv)
    config = FastDPORunConfig(
        model=args.policy,
        batch_size=args.batch_size,
        max_length=args.max_length,
        n_train=args.batch_size,
        n_eval=args.eval_pairs,
    )
    model, tokenizer = load_policy(config.model)
    layers = model.config.num_hidden_layers
    train, test = build_data(config, tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        setup = time.perf_counter()
        trainer = build_trainer(config, model, tokenizer, train, tmp)
        setup = time.perf_counter() - setup
        batch = next(iter(trainer.get_train_dataloader()))
    order = fast_train.batch_order(len(train), config.batch_size, 1, config.seed)[0]
    all_pairs, _ = fast.encode_pairs(tokenizer, train, config.max_length)
    pairs = [all_pairs[i] for i in order.tolist()]
    result = {"policy": args.policy, "batch_pairs": args.batch_size, "threads": torch.get_num_threads()}
    result["fast_vs_trainer_loss_rel_diff"] = check_same_batch(trainer, batch, pairs, config)
    result["trainer_setup_s (incl. TRL ref precompute)"] = setup
    steps = step_variants(trainer, batch, pairs, config, layers)
    times = {name: [] for name in steps}
    trainer.model.train()
    for repeat in range(args.repeats + 1):
        for name, step in steps.items():
            seconds = _timed(step)
            trainer.model.zero_grad(set_to_none=True)
            if repeat:
                times[name].append(seconds)
    median = {name: statistics.median(t) for name, t in times.items()}
    result["median_step_s"] = median
    result["speedup_vs_trainer"] = {name: median["trainer"] / s for name, s in median.items()}
    cache = fast.TrunkCache(trainer.model, layers - config.lora_layers)
    result["trunk_fill_s_per_pair"] = _timed(
        lambda: cache.fill([s for p in all_pairs for s in p])
    ) / len(all_pairs)
    result["cached_ref_s_per_pair"] = _timed(lambda: cache.reference_logps(all_pairs)) / len(all_pairs)
    rows = next(iter(test.values()))[: args.eval_pairs]
    result["eval"] = eval_times(trainer.model, tokenizer, rows, config, layers)
    if args.spread:
        spread_config = dataclasses.replace(config, n_train=128, batch_size=args.spread_batch)
        result["spread"] = spread(spread_config, [0, 2, 8, 16], args.spread_batch)
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
