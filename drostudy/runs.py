"""What the rm, dpo and rl commands share: run-or-resume into an output folder, the metrics layout, the
LoRA set-up of the policy stages and the CLI glue.

Every run folder holds one `metrics.json`, written atomically, with at least:

    {"stage": "rm" | "dpo" | "rl",
     "method": "ordinary" | "robust" | "dr_dpo" | ...,       # the loss family
     "config": {...},                                        # the config dataclass, as a dict
     "per_domain": {domain: {"accuracy": float, ...}},       # test split, every evaluated domain
     "in_distribution": {metric: mean over train domains},
     "out_of_distribution": {metric: mean over eval domains},
     "timings": {"total_s": float, ...},
     "history": [{"step": int, "loss": float, "dro/...": float, ...}, ...],
     "code": {"fingerprint": str, "modules": {module: str}}}  # drostudy.codehash

A run is reused only while both its config and the code that computed it (the training function's module
and every drostudy module it depends on) are unchanged: after an edit to a loss, a grader or a data stream,
the runs that depend on it are trained again and the others are kept.

`drostudy.analysis.tidy` turns such files into one tidy table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from drostudy import progress
from drostudy.codehash import changed_modules, code_fingerprint, function_roots
from drostudy.config import add_dataclass_arguments, dataclass_from_args
from drostudy.io import METRICS_FILE, atomic_write_json, finished_run


def domain_means(per_domain: dict[str, dict[str, float]], domains: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over `domains` (those present in `per_domain`)."""
    rows = [per_domain[d] for d in domains if d in per_domain]
    if not rows:
        return {}
    keys = set.intersection(*(set(r) for r in rows)) - {"n"}  # a count, not a metric to average
    return {k: sum(r[k] for r in rows) / len(rows) for k in sorted(keys)}


def run_folder(root: str | Path, label: str, config) -> Path:
    """root/<label>-s<seed>-<8 hex of the config>: one folder per configuration, so that a changed
    parameter starts new runs next to the finished ones instead of clashing with them."""
    text = json.dumps(dataclasses.asdict(config), sort_keys=True, default=str)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", label)  # labels such as "robust tv 0.2": no spaces in paths
    return Path(root) / f"{name}-s{config.seed}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def run_or_resume(
    config, out_dir: str | Path | None, train_fn: Callable[[object], dict], code: dict | None = None
) -> dict:
    """Run `train_fn(config)` unless `out_dir` already holds the finished run of this config and this code.

    `train_fn` returns the metrics dict (without `config`); this adds `config`, the in/out-of-distribution
    means over `config.train_domains` / `config.eval_domains`, the total time and the `code` fingerprint
    (default: `code_fingerprint(function_roots(train_fn))`), and writes `out_dir/metrics.json` atomically.
    A crash leaves no new metrics file, so a rerun redoes only this run.
    """
    cfg = dataclasses.asdict(config)
    code = code if code is not None else code_fingerprint(function_roots(train_fn))
    if out_dir is not None and (done := _reusable(out_dir, cfg, code)) is not None:
        print(f"{Path(out_dir) / METRICS_FILE} exists for this config and code: skipping the run")
        progress.run_finished(out_dir, 0.0, skipped=True)
        return done
    start = time.perf_counter()
    metrics = dict(train_fn(config))
    metrics["config"] = cfg
    per_domain = metrics.get("per_domain", {})
    metrics["in_distribution"] = domain_means(per_domain, getattr(config, "train_domains", ()))
    metrics["out_of_distribution"] = domain_means(per_domain, getattr(config, "eval_domains", ()))
    metrics.setdefault("timings", {})["total_s"] = time.perf_counter() - start
    metrics["code"] = code
    if out_dir is not None and _is_main_process():
        atomic_write_json(Path(out_dir) / METRICS_FILE, metrics)
        progress.run_finished(out_dir, metrics["timings"]["total_s"], skipped=False)
    return metrics


def _reusable(out_dir: str | Path, config: dict, code: dict) -> dict | None:
    """The finished run in `out_dir` if it has this config (else ValueError) and this code; None to rerun."""
    done = finished_run(out_dir, config)
    if done is None or (done.get("code") or {}).get("fingerprint") == code["fingerprint"]:
        return done
    why = ", ".join(changed_modules(done.get("code"), code)) or "no code fingerprint recorded"
    print(f"{Path(out_dir) / METRICS_FILE} was computed by other code ({why}): running it again")
    return None


def run_all(
    configs: list[tuple[str, object]],
    folder: str | Path | None,
    train_fn: Callable[[object], dict],
    desc: str = "runs",
) -> list[dict]:
    """`run_or_resume` each (label, config) into its `run_folder` under `folder` (None: nothing written),
    with a progress bar; each metrics dict gains its `label`. What notebooks 02-04 run their grids with."""
    from drostudy.progress import runs_planned, tqdm

    runs_planned(len(configs))  # the study runner's "run k/n, time left" line counts against this
    code = code_fingerprint(function_roots(train_fn))  # once: the same code trains every run
    runs = []
    for label, config in tqdm(configs, desc=desc):
        out = run_folder(folder, label, config) if folder is not None else None
        runs.append({**run_or_resume(config, out, train_fn, code), "label": label})
    return runs


def _is_main_process() -> bool:
    """Rank 0 (or no process group): under `accelerate launch` only one process writes the results."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@dataclasses.dataclass(frozen=True)
class PolicyRunFields:
    """The fields the policy stages (DPO, RL) share: the policy, its LoRA adapters, the domains, greedy answers."""

    model: str = "smollm2-135m-instruct"
    """the policy trained: a name for drostudy.models.load_policy (tiny-llama: random, for tests)"""
    train_domains: tuple[str, ...] = ("math", "code")
    """suite domains to train on (in distribution)"""
    eval_domains: tuple[str, ...] = ("reasoning", "knowledge", "safety")
    """held-out suite domains (out of distribution); the train domains are evaluated too"""
    lora_layers: int = 4
    """LoRA adapters on this many top transformer layers; the layers below stay frozen"""
    lora_rank: int = 8
    """LoRA rank r (alpha = 2r)"""
    max_new_tokens: int = 12
    """greedy answer length in tokens"""
    system_prompt: str = "Answer briefly."
    """system message of every chat prompt (a short one keeps sequences short)"""
    save_model: bool = False
    """save the trained LoRA adapter (and tokenizer) to OUT/model, beside metrics.json"""

    def __post_init__(self):
        """Checks of the shared fields, for every stage that inherits them: known domains, counts >= 1."""
        from drostudy.data import DOMAINS

        object.__setattr__(self, "train_domains", tuple(self.train_domains))
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        for name in ("train_domains", "eval_domains"):
            for domain in getattr(self, name):
                if domain not in DOMAINS:
                    raise ValueError(
                        f"{name}: unknown domain {domain!r}; expected one of {list(DOMAINS)}"
                    )
        if not self.train_domains:
            raise ValueError(f"train_domains must name at least one of {list(DOMAINS)}")
        for name in ("lora_layers", "lora_rank", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")


def trl_run_fields(config, output_dir: str) -> dict:
    """The TRL training fields every stage's run shares: `output_dir`, `config`'s learning rate and seed (also
    the data order's), fp32 on a CPU when there is no GPU (bf16 would fail there), no reports, no checkpoints."""
    import torch

    return dict(
        output_dir=output_dir,
        learning_rate=config.learning_rate,
        seed=config.seed,
        data_seed=config.seed,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
    )


def lora_config(config, num_layers: int):
    """peft LoRA on every projection of the top `config.lora_layers` of `num_layers` transformer layers,
    rank `config.lora_rank` (alpha = 2r, no dropout); the layers below stay frozen, so backward stops there."""
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=2 * config.lora_rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=list(range(max(0, num_layers - config.lora_layers), num_layers)),
        task_type="CAUSAL_LM",
    )


def quiet_in_batch(trainer):
    """`trainer`, printing no per-step log dicts in a batch run (transformers logging at error level only,
    as drostudy.progress.BATCH_ENV sets): with its progress bar off the Trainer prints every log
    (PrinterCallback) into the executed notebook; metrics.json's history keeps them."""
    from transformers import PrinterCallback
    from transformers.utils import logging

    if logging.get_verbosity() > logging.WARNING:
        trainer.remove_callback(PrinterCallback)
    return trainer


def history(log_history: list[dict]) -> list[dict]:
    """TRL's per-step logs (loss, dro/* and the trainer's own metrics) as the metrics.json history."""
    return [{k: v for k, v in entry.items() if k != "epoch"} for entry in log_history if "loss" in entry]


def training_command(config_cls: type, train_fn: Callable[[object], dict]):
    """(add_cli_arguments, cli_main) of a training command: the config dataclass's fields as flags, plus
    --out; the run goes through `run_or_resume` and prints its in/out-of-distribution means. A config with
    `save_model` set calls `train_fn(config, save_dir=OUT/model)`."""

    def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
        add_dataclass_arguments(parser, config_cls)
        parser.add_argument(
            "--out", required=True, help="run folder: DIR/metrics.json (a finished run is skipped)"
        )

    def cli_main(args: argparse.Namespace) -> int:
        config = dataclass_from_args(config_cls, args)
        fn = train_fn
        if getattr(config, "save_model", False):  # the model or adapter goes beside metrics.json
            fn = functools.partial(train_fn, save_dir=str(Path(args.out) / "model"))
        metrics = run_or_resume(config, args.out, fn)
        means = {k: metrics[k] for k in ("in_distribution", "out_of_distribution")}
        print(json.dumps(means, indent=2))
        return 0

    return add_cli_arguments, cli_main
