"""The FULL (GPU) configuration of notebook 03, in one place: the notebook's `FULL = True` sets its
parameters of the same names (upper case) from `FULL`, and tests/test_gpu_configs.py (every method for one
step on tiny models on the CPU) builds it with `full_config`.

FULL: every method, 3 seeds of 150 steps of 16 pairs (2400 training pairs), LoRA on all 30 layers, 200 held-out pairs and
100 greedy answers of 24 tokens per domain, pairs up to 192 tokens, safety added to the held-out domains.
"""

from __future__ import annotations

import dataclasses

from drostudy.dpo.run import DPORunConfig

FULL = dict(
    steps=150,
    batch_size=16,
    n_train=2400,
    learning_rate=5e-4,
    n_eval=200,
    n_generate=100,
    max_new_tokens=24,
    max_length=192,
    lora_layers=30,
)
FULL_SEEDS = 3
FULL_METHODS = "tv,kl,chi2,dr_dpo,kldpo,group,rdpo,wdpo"  # every method besides ordinary
FULL_EXTRA_EVAL = ("safety",)


def full_config(base: DPORunConfig, **fields) -> DPORunConfig:
    """`base` at the FULL sizes (safety added to its held-out domains), then any other `fields` (a test
    swaps in model="tiny-llama", steps=1)."""
    eval_domains = base.eval_domains + tuple(d for d in FULL_EXTRA_EVAL if d not in base.eval_domains)
    return dataclasses.replace(base, **{**FULL, "eval_domains": eval_domains, **fields})
