"""Train a (robust) DPO policy on some domains of the suite and evaluate it on all of them.

    python -m drostudy dpo --loss robust --divergence tv --radius 0.1 --train-domains math,code \
        --eval-domains reasoning,knowledge --seed 0 --out runs/dpo_tv

The policy is SmolLM2-135M-Instruct with LoRA adapters on its top `lora_layers` layers (the lower layers stay
frozen, so backward stops there and a CPU run is feasible); the reference is the same model with the adapters
off, and its log-probs on the training pairs are computed once before training. The run's config is
`DPORunConfig` (drostudy.dpo.config); its loss (drostudy.dpo.trainer) is chosen by name: ordinary DPO,
robust DPO over a divergence ball, Dr. DPO, KLDPO, group-robust DPO over the training domains (`group_eg`),
or rDPO. `out/metrics.json` follows the layout of
`drostudy.runs`, with per_domain {accuracy, margin, correct, correct_before, kl, n}
(drostudy.evaluate) and the TRL training log, dro/* metrics included, as history.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time

import torch

from drostudy import evaluate
from drostudy.dpo.config import DPORunConfig
from drostudy.dpo.trainer import RobustDPOTrainer
from drostudy.dropin.cli import GROUP_COLUMN, load_preferences, trl_overrides
from drostudy.io import atomic_write_json, cache_dir, seed_everything
from drostudy.progress import tqdm
from drostudy.runs import (
    history,
    lora_config,
    quiet_in_batch,
    training_command,
    trl_run_fields,
)


def chat_row(row: dict, system_prompt: str) -> dict:
    """A suite row as TRL conversational data: prompt messages, chosen/rejected assistant turns."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {
        "prompt": [*system, {"role": "user", "content": row["prompt"]}],
        "chosen": [{"role": "assistant", "content": row["chosen"]}],
        "rejected": [{"role": "assistant", "content": row["rejected"]}],
        "domain": row["domain"],
        "answer": evaluate.reference_answer(row["chosen"]),
    }


def fitting_rows(ds, domain: str, n: int, tokenizer, config: DPORunConfig, seed: int) -> list[dict]:
    """Up to `n` (0: all) chat rows of `domain` whose prompt + longer response fit `config.max_length`
    tokens: a longer pair is left out, never truncated."""
    from drostudy.data import select

    rows = []
    for row in select(ds, domains=[domain], seed=seed):
        chat = chat_row(row, config.system_prompt)
        pairs = evaluate.encode(tokenizer, [chat["prompt"]] * 2, [row["chosen"], row["rejected"]])
        if max(len(p) + len(c) for p, c in pairs) <= config.max_length:
            rows.append(chat)
        if n and len(rows) == n:
            break
    return rows


def build_data(config: DPORunConfig, tokenizer):
    """(train Dataset with a `group` column of domain ids, {domain: test rows}) for this config."""
    from datasets import ClassLabel, Dataset

    from drostudy.data import load_suite

    suite = load_suite()
    domains = dict.fromkeys((*config.train_domains, *config.eval_domains))
    test = {d: fitting_rows(suite["test"], d, config.n_eval, tokenizer, config, seed=0) for d in domains}
    if config.dataset:
        return own_data(config), test
    per_domain = -(-config.n_train // len(config.train_domains))  # ceil
    train = []
    for group, domain in enumerate(config.train_domains):
        rows = fitting_rows(suite["train"], domain, per_domain, tokenizer, config, config.seed)
        train += [{**r, "group": group} for r in rows]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed))
    train = [{k: r[k] for k in ("prompt", "chosen", "rejected", "group")} for r in train]
    train = Dataset.from_list([train[i] for i in order[: config.n_train].tolist()])
    train = train.cast_column("group", ClassLabel(names=list(config.train_domains)))
    return train, test


def own_data(config: DPORunConfig):
    """`config.dataset`'s pairs, shuffled by the seed, at most n_train; `domain` becomes the group column."""
    train = load_preferences(config.dataset).shuffle(seed=config.seed)
    train = train.select(range(min(config.n_train, len(train))))
    return train.rename_column(GROUP_COLUMN, "group") if GROUP_COLUMN in train.column_names else train


def trl_config(config: DPORunConfig, output_dir: str, **overrides):
    from drostudy.dropin.configs import RobustDPOConfig

    kwargs = trl_run_fields(config, output_dir) | dict(
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        beta=config.beta,
        precompute_ref_log_probs=True,
        max_length=config.max_length,
        logging_steps=1,
        disable_tqdm=None,  # bars unless transformers logs at error level only (batch runs)
    )
    trl = trl_overrides(RobustDPOConfig, config.trl_args)
    return RobustDPOConfig(**(kwargs | config.robust_fields() | trl | overrides))


def build_trainer(config: DPORunConfig, model, tokenizer, train, output_dir: str) -> RobustDPOTrainer:
    """The RobustDPOTrainer of `config` on a train Dataset (chat rows with a group column)."""
    trainer = RobustDPOTrainer(
        model=model,
        args=trl_config(config, output_dir),
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=lora_config(config, model.config.num_hidden_layers),
        ref_cache_dir=cache_dir() / "dpo_ref_logps",
    )
    return quiet_in_batch(trainer)


def reference_eval(model, tokenizer, test: dict, config: DPORunConfig) -> dict[str, dict]:
    """Per domain, what the reference policy gives and every run shares, cached on disk by content:
    {"correct_before": fraction correct, "ref_rejected_logps": [n floats]}."""
    key = json.dumps([config.model, config.max_new_tokens, config.n_generate, test], sort_keys=True)
    path = cache_dir() / "dpo_reference_eval" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = {}
    for domain, rows in test.items():
        prompts, rejected = [r["prompt"] for r in rows], [r["rejected"] for r in rows]
        logps = evaluate.reference_logps(model, tokenizer, prompts, rejected)
        with evaluate.reference_context(model):
            correct = evaluate.answer_accuracy(
                model, tokenizer, evaluate.unique_prompts(rows, config.n_generate), config.max_new_tokens
            )
        out[domain] = {"correct_before": correct, "ref_rejected_logps": logps.tolist()}
    atomic_write_json(path, out)
    return out


def train_and_evaluate(config: DPORunConfig, save_dir: str | None = None) -> dict:
    """Train with `config` on TRL's path (RobustDPOTrainer), evaluate every domain; returns the metrics dict
    in the drostudy.runs layout (`run_metrics`).
    save_dir: where to save the trained adapter and tokenizer (None: not saved)."""
    from drostudy.models import load_policy

    seed_everything(config.seed)
    model, tokenizer = load_policy(config.model)
    train, test = build_data(config, tokenizer)
    timings = {}
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        trainer = build_trainer(config, model, tokenizer, train, output_dir)
        timings["setup_s"] = time.perf_counter() - start
        trainer.train()
        timings["train_s"] = time.perf_counter() - start - timings["setup_s"]
        if save_dir is not None:
            trainer.save_model(save_dir)  # the adapter, training_args.bin, drostudy_robust.json
            tokenizer.save_pretrained(save_dir)
    policy = trainer.model
    start = time.perf_counter()
    shared = reference_eval(policy, tokenizer, test, config)
    per_domain = {}
    for domain, rows in tqdm(test.items(), desc="evaluate domains"):
        stats = evaluate.evaluate_domain(
            policy,
            tokenizer,
            rows,
            config.beta,
            max_new_tokens=config.max_new_tokens,
            n_generate=config.n_generate,
            ref_rejected_logps=torch.tensor(shared[domain]["ref_rejected_logps"]),
        )
        per_domain[domain] = {**stats, "correct_before": shared[domain]["correct_before"]}
    timings["eval_s"] = time.perf_counter() - start
    steps = history(trainer.state.log_history)
    return run_metrics(config, per_domain, timings, len(train), steps)


def run_metrics(
    config: DPORunConfig, per_domain: dict, timings: dict, n_train: int, steps: list
) -> dict:
    """One DPO run's metrics in the drostudy.runs layout; the TRL path and the fast path both return it."""
    robust = config.loss == "robust"
    return {
        "stage": "dpo",
        "method": config.method,
        "divergence": config.divergence if robust else None,
        "radius": config.radius if robust else None,
        "seed": config.seed,
        "per_domain": per_domain,
        "timings": {**timings, "train_step_s": timings["train_s"] / config.steps},
        "n_train": n_train,
        "history": steps,
    }


# The lambda looks the training function up at call time, so tests and users can patch it.
add_cli_arguments, cli_main = training_command(
    DPORunConfig, lambda config, **kw: train_and_evaluate(config, **kw)
)
