"""A whole DPO run on the fast path: the drop-in for drostudy.dpo.run.train_and_evaluate (same metrics
layout), for the LoRA-on-top-layers setting of notebook 03.

Training is `drostudy.dpo.fast_train.train`; held-out preference accuracy, margin and KL come from the same
cached trunk (`evaluate_pairs`: the implicit reward beta * (log pi - log pi_ref) of chosen vs rejected, and
the exact token KL on the chosen completions, as drostudy.evaluate.sequence_stats computes them); `correct`
(greedy answers) still needs the full model and runs as in the slow path. The trunk states and the
reference log-probs are kept in a `TrunkCache` per (policy, first trainable block); the runs of a study
share one `TrunkCaches` that its runner owns (drostudy.dpo.study.run), since the frozen blocks are the same
checkpoint in every run. A run given none computes its own.
"""

from __future__ import annotations

import time

import torch

from drostudy import evaluate
from drostudy.dpo import fast
from drostudy.dpo.fast_train import FastDPORunConfig, train
from drostudy.dpo.run import build_data, reference_eval, run_metrics
from drostudy.io import seed_everything
from drostudy.runs import lora_config


class TrunkCaches:
    """The `TrunkCache` of each (policy name, first trainable block), for the runs that share it: a study's
    runs fill it in their order, and each run computes with its own model (the blocks below the first
    trainable one and the reference are the same weights in every run). A cache computes each sequence
    alone, so what a run reads from it does not depend on that order (tests/test_dpo_cache_order.py)."""

    def __init__(self):
        self._caches: dict[tuple[str, int], fast.TrunkCache] = {}

    def get(self, model, policy: str, first_trainable: int) -> fast.TrunkCache:
        """The TrunkCache of `policy` below block `first_trainable`, now computing with `model`."""
        key = (policy, first_trainable)
        if key not in self._caches:
            self._caches[key] = fast.TrunkCache(model, first_trainable)
        cache = self._caches[key]
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
        # the KL is on the chosen completions only: the reference runs on the chosen rows alone (half the
        # work), its top blocks once per study (the cache keeps their states); the chosen rows' tokens come
        # first in `logp` (rows in order, chosen rows first)
        on_chosen = rows < len(chunk)
        ref_states, _ = cache.reference_states([p[0] for p in chunk])
        ref_logp = fast.lm_head(model)(ref_states).float().log_softmax(-1)
        policy = logp[on_chosen]  # (Mc, V)
        token_kl = (policy.exp() * (policy - ref_logp)).sum(-1)  # (Mc, V) -> (Mc,)
        kl.append(token_kl.new_zeros(len(chunk)).index_add(0, rows[on_chosen], token_kl))
    metrics = evaluate.preference_metrics(
        torch.cat(chosen).cpu(), torch.cat(rejected).cpu(), ref_chosen, ref_rejected, beta
    )
    return metrics | {"kl": float(torch.cat(kl).double().mean())}


def train_and_evaluate(config: FastDPORunConfig, trunks: TrunkCaches | None = None) -> dict:
    """Train with `config` on the fast path and evaluate every domain: the metrics dict of
    drostudy.dpo.run.train_and_evaluate (drostudy.runs layout), `timings` split the same way. trunks: the
    caches this run shares with others (None: its own)."""
    from peft import get_peft_model

    from drostudy.models import load_policy

    seed_everything(config.seed)
    model, tokenizer = load_policy(config.model)
    train_rows, test = build_data(config, tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers))
    timings, start = {}, time.perf_counter()
    trunks = TrunkCaches() if trunks is None else trunks
    cache = trunks.get(model, config.model, max(0, layers - config.lora_layers))
    pairs, kept = fast.encode_pairs(tokenizer, train_rows, config.max_length)
    groups = torch.tensor(train_rows["group"])[kept]
    cache.fill([s for p in pairs for s in p])
    timings["setup_s"] = time.perf_counter() - start
    history = train(config, model, cache, pairs, groups)
    timings["train_s"] = time.perf_counter() - start - timings["setup_s"]
    start = time.perf_counter()
    shared = reference_eval(model, tokenizer, test, config) if config.generate else {}
    per_domain = {}
    for domain, rows in test.items():
        test_pairs, _ = fast.encode_pairs(tokenizer, rows, None)
        stats = evaluate_pairs(model, cache, test_pairs, config.beta) | {"n": len(rows)}
        if config.generate:
            stats["correct"] = evaluate.answer_accuracy(
                model, tokenizer, evaluate.unique_prompts(rows, config.n_generate), config.max_new_tokens
            )
            stats["correct_before"] = shared[domain]["correct_before"]
        per_domain[domain] = stats
    timings["eval_s"] = time.perf_counter() - start
    return run_metrics(config, per_domain, timings, len(pairs), history)
