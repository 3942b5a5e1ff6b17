"""One reward-model run end to end: `python -m drostudy rm ...`.

`RMConfig` is the run's configuration; `train_reward_model(config)` prepares the data, trains on the TRL path
(drostudy.reward.trainer) or the cached-encoder fast path (drostudy.reward.fast, `engine="cached"`) and
measures per-domain test accuracy; `cli_main` wraps it in drostudy.runs.run_or_resume.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time

from drostudy.config import method_label, setting_label
from drostudy.dropin.cli import GROUP_COLUMN, load_preferences, trl_overrides
from drostudy.dropin.configs import RobustRewardConfig
from drostudy.io import seed_everything
from drostudy.reward.objective import check_choice, freeze_lower_layers
from drostudy.reward.trainer import RobustRewardTrainer, trl_args
from drostudy.runs import quiet_in_batch, training_command
from drostudy.weights import LEVELS, validate_outlier_fraction, validate_radius

ENGINES = ("trl", "cached")


@dataclasses.dataclass(frozen=True)
class RMConfig:
    """One reward-model run: data mix, robust objective, optimisation. DRO is off by default (radius 0)."""

    RENAMED_FIELDS = {"epochs": "steps", "max_length": "truncate_length"}  # old flags (drostudy.config)

    model: str = "minilm-l6"
    """reward backbone: a name known to drostudy.models.load_reward_model (or a local checkpoint path)"""
    train_domains: tuple[str, ...] = ("math", "code", "knowledge")
    """domains of the training mix (the in-distribution domains)"""
    train_proportions: tuple[float, ...] = ()
    """share of each training domain in the mix, in the order of train_domains; empty = equal shares"""
    eval_domains: tuple[str, ...] = ("reasoning", "safety")
    """held-out domains reported as out of distribution (accuracy is measured on every domain anyway)"""
    train_kinds: tuple[str, ...] = ()
    """kinds of rejected response kept for training (empty = all): the filtering experiment"""
    n_train: int = 750
    """training pairs drawn from the train split of the training domains"""
    n_eval: int = 300
    """held-out test pairs per domain at most (0 = the whole test split)"""
    divergence: str = "tv"
    """ambiguity set of the worst case: tv, kl, chi2 or cvar (drostudy.weights.DIVERGENCES)"""
    radius: float = 0.0
    """ball size rho (for cvar the tail fraction alpha, 1 = ordinary); 0 = ordinary Bradley-Terry"""
    level: str = "example"
    """worst case over pairs (example: one pair per prompt, i.e. prompt-level) or over training domains (group)"""
    outlier_fraction: float = 0.0
    """DORO: drop this fraction of each batch's largest losses before the worst case (level example only)"""
    label_noise: float = 0.0
    """fraction of training pairs with chosen and rejected swapped (drawn from the seed, not from the model's)"""
    learning_rate: float = 5e-5
    """AdamW learning rate (linear decay to 0, as TRL's default schedule)"""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay on the trained parameters (0 = TRL's default: none)"""
    label_smoothing: float = 0.0
    """eps in [0, 0.5) of the Bradley-Terry loss -(1 - eps) log sigma(m) - eps log sigma(-m) on the margin
    m (0 = ordinary Bradley-Terry; cached engine only)"""
    steps: int = 47
    """optimiser steps; the pairs are reshuffled at each new pass over them (47: one pass of 750 at 16)"""
    batch_size: int = 16
    """pairs per minibatch: the worst case is taken over this many losses (times the process count)"""
    truncate_length: int = 128
    """tokens per (prompt, response) text; longer texts are truncated, the prompt cut from the left so the
    question and answer stay"""
    frozen_layers: int = 0
    """lower encoder layers (and the embeddings, when > 0) kept frozen"""
    engine: str = "trl"
    """trl: RobustRewardTrainer on the whole model; cached: cache the frozen layers' outputs, train the rest"""
    logging_steps: int = 5
    """optimizer steps between logged history rows"""
    seed: int = 0
    """seeds the data subset, the head initialisation and the batch order"""
    dataset: str = ""
    """your own training pairs: a JSONL/JSON/parquet file or hub id, string columns prompt/chosen/rejected
    (+ domain); '' = the suite's train_domains (test accuracy is still measured on the suite)"""
    save_model: bool = False
    """save the trained reward model (and tokenizer) to OUT/model, beside metrics.json"""
    trl_args: tuple[str, ...] = ()
    """TRL training fields KEY=VALUE,... for RobustRewardConfig (e.g. gradient_accumulation_steps=4)"""

    @classmethod
    def from_renamed(cls, old: str, value, values: dict):
        """The value of an old flag in today's unit: --epochs E becomes E passes of ceil(n_train / batch_size)
        steps (the steps of E epochs on one process without gradient accumulation, when the data holds
        n_train pairs); --max-length is --truncate-length."""
        if old == "epochs":
            return value * math.ceil(values["n_train"] / values["batch_size"])
        return value

    def __post_init__(self) -> None:
        from drostudy.data import DOMAINS

        for name in ("train_domains", "eval_domains", "train_kinds", "trl_args"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        proportions = tuple(float(p) for p in self.train_proportions)
        object.__setattr__(self, "train_proportions", proportions)
        for name in ("train_domains", "eval_domains"):
            domains = getattr(self, name)
            unknown = [d for d in domains if d not in DOMAINS]
            if unknown or not domains:
                raise ValueError(
                    f"{name} has unknown or no domains {unknown}; expected some of {list(DOMAINS)}"
                )
        if proportions and (len(proportions) != len(self.train_domains) or min(proportions) < 0):
            raise ValueError(
                f"train_proportions must be {len(self.train_domains)} non-negative numbers (one per train "
                f"domain); got {proportions!r}"
            )
        object.__setattr__(self, "radius", validate_radius(self.divergence, self.radius))
        trl_overrides(
            RobustRewardConfig, self.trl_args
        )  # names and types checked now, not after loading
        check_choice("level", self.level, LEVELS)
        outliers = validate_outlier_fraction(self.outlier_fraction)
        object.__setattr__(self, "outlier_fraction", outliers)
        if outliers > 0 and self.level != "example":
            raise ValueError(
                f"outlier_fraction > 0 (DORO) needs level='example'; got level={self.level!r}"
            )
        noise = self.label_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 0.5:
            raise ValueError(f"label_noise must be a number in [0, 0.5); got {noise!r}")
        object.__setattr__(self, "label_noise", float(noise))
        check_choice("engine", self.engine, ENGINES)
        for name, high in (("weight_decay", math.inf), ("label_smoothing", 0.5)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < high:
                raise ValueError(f"{name} must be a number in [0, {high:g}); got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.label_smoothing and self.engine != "cached":
            raise ValueError("label_smoothing > 0 needs engine='cached' (the TRL path has no smoothing)")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate!r}")
        for name in ("n_train", "steps", "batch_size", "truncate_length", "logging_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        for name in ("n_eval", "frozen_layers"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a non-negative integer; got {getattr(self, name)!r}")

    @property
    def method(self) -> str:
        """`ordinary` when the ball is a point (radius 0, or cvar alpha 1), else `robust` (`group` at level
        "group"), `doro` whenever outlier_fraction > 0 (trimming changes the loss even at radius 0);
        `_filtered` is appended when train_kinds drops some kinds, `_noise<fraction>` under label noise."""
        return (
            self._objective()
            + ("_filtered" if self.train_kinds else "")
            + (f"_noise{self.label_noise:g}" if self.label_noise else "")
        )

    @property
    def setting(self) -> str:
        """The objective's name in a results table (drostudy.config.setting_label): `ordinary`, `tv 0.5`,
        `group tv 0.5`, `doro tv 0.5 eps 0.1`, ordinary moved along a regularisation knob `ordinary
        weight_decay 0.01`, `ordinary label_smoothing 0.1` (each knob named where it is not 0); the data
        (kinds, label noise) and the number of steps are not part of it (drostudy.reward.study names steps)."""
        knobs = {"eps": self.outlier_fraction} if self.outlier_fraction > 0 else {}
        for name in ("weight_decay", "label_smoothing"):
            if getattr(self, name):
                knobs[name] = getattr(self, name)
        return setting_label(self._objective(), self.divergence, self.radius, **knobs)

    def _objective(self) -> str:
        if self.outlier_fraction > 0:
            return "doro"
        return method_label(self.divergence, self.radius, "group" if self.level == "group" else "robust")


def train_reward_model(config: RMConfig, save_dir: str | None = None) -> dict:
    """Train and evaluate one reward model on the TRL path; returns the metrics of drostudy/runs.py.
    save_dir: where to save the trained model and tokenizer (None: not saved)."""
    from datasets import ClassLabel

    from drostudy.models import load_reward_model
    from drostudy.reward.data import evaluate_pairs, prepare_splits, tokenize_pairs

    if config.engine == "cached":
        from drostudy.reward.fast import train_cached_reward_model

        return train_cached_reward_model(config)
    seed_everything(config.seed)
    train, test = prepare_splits(config)
    names = list(config.train_domains)
    if config.dataset:
        train, names = own_pairs(config)
    model, tokenizer = load_reward_model(config.model)
    freeze_lower_layers(model, config.frozen_layers)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RobustRewardTrainer(
            model=model,
            args=trl_args(config, tmp),
            train_dataset=tokenize_pairs(train, tokenizer, config.truncate_length, names).cast_column(
                "group", ClassLabel(names=names)
            ),
            processing_class=tokenizer,
        )
        quiet_in_batch(trainer).train()
        if save_dir is not None:
            trainer.save_model(save_dir)  # the model, training_args.bin, drostudy_robust.json
            tokenizer.save_pretrained(save_dir)
    train_s = time.perf_counter() - start
    metrics = evaluate_pairs(model, tokenizer, test, config.truncate_length, config.batch_size)
    metrics["timings"]["train_s"] = train_s
    history = [row for row in trainer.state.log_history if "loss" in row]
    return {"stage": "rm", "method": config.method, **metrics, "history": history}


def own_pairs(config: RMConfig):
    """(`config.dataset`'s pairs shuffled by the seed, at most n_train, with a `domain` column; group names).
    Pairs without a `domain` column form one group, "all"."""
    train = load_preferences(config.dataset).shuffle(seed=config.seed)
    train = train.select(range(min(config.n_train, len(train))))
    if GROUP_COLUMN not in train.column_names:
        train = train.add_column(GROUP_COLUMN, ["all"] * len(train))
    return train, sorted(set(train[GROUP_COLUMN]))


# The lambda looks the training function up at call time, so tests and users can patch it.
add_cli_arguments, cli_main = training_command(
    RMConfig, lambda config, **kw: train_reward_model(config, **kw)
)
