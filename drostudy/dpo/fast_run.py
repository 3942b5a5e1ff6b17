"""A whole DPO run on the fast path: the drop-in for drostudy.dpo.run.train_and_evaluate (same metrics
layout), for the LoRA-on-top-layers setting of notebook 03.

Training is `drostudy.dpo.fast.train`; held-out preference accuracy, margin and KL come from the same cached
trunk (`evaluate_pairs`: the implicit reward beta * (log pi - log pi_ref) of chosen vs rejected, and the
exact token KL on the chosen completions, as drostudy.evaluate.sequence_stats computes them); `correct`
(greedy answers) still needs the full model and runs as in the slow path. The trunk cache and the
reference log-probs live in a process-wide `TrunkCache` per (policy, first trainable block): the frozen
blocks are the same checkpoint in every run, so the runs of a study share them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from drostudy import evaluate
from drostudy.dpo import fast
from drostudy.dpo.run import DPORunConfig, build_data, reference_eval, run_metrics
from drostudy.io import seed_everything
from drostudy.runs import lora_config

_CACHES: dict[tuple[str, int], fast.TrunkCache] = {}


@dataclass(frozen=True)
class FastDPORunConfig(DPORunConfig):
    """DPORunConfig plus WDPO, for the fast path."""

    wdpo_radius: float = 0.0
    """WDPO's Wasserstein radius rho (loss ordinary only): adds rho * RMS gradient norm w.r.t. the states
    entering the first trainable block (drostudy.dpo.fast docstring); 0 is off"""
    generate: bool = True
    """greedy answers (`correct`, `correct_before`, `n_generate` prompts per domain); off leaves both metrics
    out: generation runs the full model token by token and costs more per prompt than a training pair"""

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.wdpo_radius < float("inf"):
            raise ValueError(f"wdpo_radius must be a finite number >= 0; got {self.wdpo_radius!r}")
        if self.wdpo_radius > 0 and self.loss != "ordinary":
            raise ValueError(f"wdpo_radius > 0 needs loss 'ordinary'; got loss {self.loss!r}")


def shared_cache(model, policy: str, first_trainable: int) -> fast.TrunkCache:
    """The process-wide TrunkCache of `policy` below block `first_trainable`, now computing with `model`
    (any run's model: the blocks below `first_trainable` and the reference are the same weights)."""
    cache = _CACHES.setdefault((policy, first_trainable), fast.TrunkCache(model, first_trainable))
    cache.model = model
    return cache


@torch.no_grad()
def evaluate_pairs(model, cache: fast.TrunkCache, pairs, beta: float, batch_size: int = 16) -> dict:
    """accuracy and margin of the implicit reward and the token KL on chosen completions (nats per
    response), from the cache; pairs: (chosen, rejected) Sequences."""
    model.eval()
    ref_chosen, ref_rejected = cache.reference_logps(pairs)
    chosen, rejected, kl = [], [], []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = cache.batch([p[0] for p in chunk] + [p[1] for p in chunk])
        logits, targets, rows = fast.completion_logits(model, batch, cache.first)
        logp = logits.float().log_softmax(-1)
        token = logp.gather(-1, targets[:, None])[:, 0]
        logps = token.new_zeros(len(batch.labels)).index_add(0, rows, token)
        chosen.append(logps[: len(chunk)])
        rejected.append(logps[len(chunk) :])
        with model.disable_adapter():
            ref_logp = fast.completion_logits(model, batch, cache.first)[0].float().log_softmax(-1)
        token_kl = (logp.exp() * (logp - ref_logp)).sum(-1)  # (M, V) -> (M,)
        kl.append(token_kl.new_zeros(len(batch.labels)).index_add(0, rows, token_kl)[: len(chunk)])
    metrics = evaluate.preference_metrics(
        torch.cat(chosen).cpu(), torch.cat(rejected).cpu(), ref_chosen, ref_rejected, beta
    )
    return metrics | {"kl": float(torch.cat(kl).double().mean())}


def train_and_evaluate(config: DPORunConfig) -> dict:
    """Train with `config` on the fast path and evaluate every domain: the metrics dict of
    drostudy.dpo.run.train_and_evaluate (drostudy.runs layout), `timings` split the same way."""
    from peft import get_peft_model

    from drostudy.models import load_policy

    seed_everything(config.seed)
    model, tokenizer = load_policy(config.model)
    train_rows, test = build_data(config, tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers))
    timings, start = {}, time.perf_counter()
    cache = shared_cache(model, config.model, max(0, layers - config.lora_layers))
    pairs, kept = fast.encode_pairs(tokenizer, train_rows, config.max_length)
    groups = torch.tensor(train_rows["group"])[kept]
    cache.fill([s for p in pairs for s in p])
    timings["setup_s"] = time.perf_counter() - start
    history = fast.train(config, model, cache, pairs, groups)
    timings["train_s"] = time.perf_counter() - start - timings["setup_s"]
    start = time.perf_counter()
    generate = getattr(config, "generate", True)
    shared = reference_eval(model, tokenizer, test, config) if generate else {}
    per_domain = {}
    for domain, rows in test.items():
        test_pairs, _ = fast.encode_pairs(tokenizer, rows, None)
        stats = evaluate_pairs(model, cache, test_pairs, config.beta) | {"n": len(rows)}
        if generate:
            stats["correct"] = evaluate.answer_accuracy(
                model, tokenizer, evaluate.unique_prompts(rows, config.n_generate), config.max_new_tokens
            )
            stats["correct_before"] = shared[domain]["correct_before"]
        per_domain[domain] = stats
    timings["eval_s"] = time.perf_counter() - start
    method = "wdpo" if getattr(config, "wdpo_radius", 0.0) > 0 else config.loss
    return run_metrics(config, method, per_domain, timings, len(pairs), history)
