"""Robust Bradley-Terry reward models on TRL: `python -m drostudy rm ...`.

`RobustRewardTrainer` is TRL's RewardTrainer with one change: the mean of the per-pair Bradley-Terry losses
l_i = -log sigmoid(r(x, y_w) - r(x, y_l)) becomes the worst case sum_i w*_i l_i over a divergence ball of
`radius` around the uniform minibatch distribution (drostudy.losses.robust_bradley_terry_loss), per pair
(`level="example"`, robust over prompts: one pair per prompt) or per training domain (`level="group"`).
Under several processes the weights are those of the global batch. radius 0 (cvar: 1) is TRL's loss.

`train_reward_model(config)` runs one configuration end to end (data, model, training, per-domain test
accuracy); `cli_main` wraps it in drostudy.train.common.run_or_resume. The cached-encoder fast path that the
notebook uses lives in drostudy.train.reward_cached and shares the config and the evaluation code.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence

import torch
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from drostudy import distributed
from drostudy.io import seed_everything
from drostudy.losses import RobustLoss, bradley_terry_loss, robust_loss
from drostudy.train.common import training_command
from drostudy.train.trl_batch import OptimizerBatchMixin
from drostudy.train.trl_cli import GROUP_COLUMN, load_preferences, trl_overrides
from drostudy.train.trl_configs import RobustRewardConfig, check_config
from drostudy.train.trl_save import GroupColumn, RobustSaveMixin
from drostudy.weights import validate_radius

LEVELS = ("example", "group")
ENGINES = ("trl", "cached")


@dataclasses.dataclass
class RMConfig:
    """One reward-model run: data mix, robust objective, optimisation. DRO is off by default (radius 0)."""

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
    n_test: int = 300
    """test pairs per domain at most (0 = the whole test split)"""
    divergence: str = "tv"
    """ambiguity set of the worst case: tv, kl, chi2 or cvar (drostudy.weights.DIVERGENCES)"""
    radius: float = 0.0
    """ball size rho (for cvar the tail fraction alpha, 1 = ordinary); 0 = ordinary Bradley-Terry"""
    level: str = "example"
    """worst case over pairs (example: one pair per prompt, i.e. prompt-level) or over training domains (group)"""
    lr: float = 5e-5
    """AdamW learning rate (linear decay to 0, as TRL's default schedule)"""
    epochs: int = 1
    """passes over the training pairs"""
    batch_size: int = 16
    """pairs per minibatch: the worst case is taken over this many losses (times the process count)"""
    max_length: int = 128
    """tokens per (prompt, response) text; the prompt is cut from the left so the question and answer stay"""
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

    def __post_init__(self) -> None:
        from drostudy.data import DOMAINS

        self.train_domains, self.eval_domains = tuple(self.train_domains), tuple(self.eval_domains)
        self.train_proportions = tuple(float(p) for p in self.train_proportions)
        self.train_kinds = tuple(self.train_kinds)
        for name in ("train_domains", "eval_domains"):
            domains = getattr(self, name)
            unknown = [d for d in domains if d not in DOMAINS]
            if unknown or not domains:
                raise ValueError(
                    f"{name} has unknown or no domains {unknown}; expected some of {list(DOMAINS)}"
                )
        if self.train_proportions and (
            len(self.train_proportions) != len(self.train_domains) or min(self.train_proportions) < 0
        ):
            raise ValueError(
                f"train_proportions must be {len(self.train_domains)} non-negative numbers (one per train "
                f"domain); got {self.train_proportions!r}"
            )
        self.radius = validate_radius(self.divergence, self.radius)
        self.trl_args = tuple(self.trl_args)
        trl_overrides(
            RobustRewardConfig, self.trl_args
        )  # names and types checked now, not after loading
        _check_choice("level", self.level, LEVELS)
        _check_choice("engine", self.engine, ENGINES)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        for name in ("n_train", "epochs", "batch_size", "max_length", "logging_steps"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)!r}")
        for name in ("n_test", "frozen_layers"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be a non-negative integer; got {getattr(self, name)!r}")

    @property
    def method(self) -> str:
        """`ordinary` when the ball is a point (radius 0, or cvar alpha 1), else `robust` (`group_robust` at
        level "group"); `_filtered` is appended when train_kinds drops some kinds."""
        ordinary = self.radius == 0.0 or (self.divergence == "cvar" and self.radius == 1.0)
        method = "ordinary" if ordinary else ("group_robust" if self.level == "group" else "robust")
        return method + ("_filtered" if self.train_kinds else "")


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


@dataclasses.dataclass
class DataCollatorWithGroups(DataCollatorForPreference):
    """TRL's preference collator that also carries each pair's group id (its domain) as (B,) under `column`."""

    column: str = "group"
    ids: dict | None = None  # group name -> id when the column holds names

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        if self.column in examples[0]:
            values = [ex[self.column] for ex in examples]
            ids = [self.ids[v] for v in values] if self.ids else [int(v) for v in values]
            batch[self.column] = torch.tensor(ids, dtype=torch.long)
        return batch


class RobustRewardTrainer(RobustSaveMixin, OptimizerBatchMixin, RewardTrainer):
    """RewardTrainer minimising the worst-case Bradley-Terry loss over a divergence ball (RobustRewardConfig).

    The ball, the level ("example": weights over pairs; "group": over the groups of `group_column`) and the
    batch the worst case is taken over (by default the optimizer batch) come from `args`; every other
    argument is RewardTrainer's. Logs TRL's metrics plus `dro/*`, among them `dro/weight_mass/<group>`.
    """

    def __init__(self, model=None, args=None, *rest, **kwargs):
        check_config(args, RobustRewardConfig, "RobustRewardTrainer")
        self.groups = GroupColumn.from_dataset(args, kwargs.get("train_dataset"), "train_dataset")
        super().__init__(model, args, *rest, **kwargs)
        if type(self.data_collator) is DataCollatorForPreference:  # keep TRL's padding
            self.data_collator = DataCollatorWithGroups(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
                column=args.group_column,
                ids=self.groups.ids,
            )
        self._init_window()

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", self.args.group_column]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups = inputs.pop(self.args.group_column, None)
        if not self.args.uses_dro():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        per_example, rewards, outputs = self._pair_losses(model, inputs, groups)
        loss = self._window_loss(per_example, groups)
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(
                (rewards[0] + rewards[1]) ** 2
            )
        self._log_trl_metrics(mode, inputs, outputs.logits, *rewards)
        return (loss, outputs) if return_outputs else loss

    def _pair_losses(self, model, inputs, groups):
        """(Bradley-Terry losses (B,), (chosen, rejected) rewards, model outputs) of one batch."""
        if groups is None and self.args.needs_groups():
            raise ValueError(f"level='group' needs the {self.args.group_column!r} column in every batch")
        margin = inputs.pop("margin", None)
        outputs = model(**inputs, use_cache=False)
        rewards = torch.chunk(outputs.logits.squeeze(-1), chunks=2)  # (2B,) -> 2 x (B,)
        return bradley_terry_loss(*rewards, margin=margin), rewards, outputs

    def _per_example_losses(self, model, batch):
        inputs = self._prepare_inputs(batch)
        groups = inputs.pop(self.args.group_column, None)
        return self._pair_losses(model, inputs, groups)[0], groups

    def _objective(self, per_example, groups) -> RobustLoss:
        args = self.args
        level_groups = groups if args.level == "group" else None
        out = robust_loss(per_example, args.divergence, args.radius, level_groups)
        if groups is not None and self.groups.names:
            out.metrics.update(self._weight_mass(out.weights, groups))
        return out

    def _log_trl_metrics(self, mode, inputs, logits, rewards_chosen, rewards_rejected) -> None:
        """The metrics TRL's RewardTrainer logs, computed as it does."""
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            all_rewards = self.accelerator.gather(logits)
            self._metrics[mode]["min_reward"].append(all_rewards.min().item())
            self._metrics[mode]["mean_reward"].append(all_rewards.mean().item())
            self._metrics[mode]["max_reward"].append(all_rewards.max().item())
            accuracy = (rewards_chosen > rewards_rejected).float().mean()
            self._metrics[mode]["accuracy"].append(
                self.accelerator.gather_for_metrics(accuracy).mean().item()
            )
            margin = (rewards_chosen - rewards_rejected).mean()
            self._metrics[mode]["margin"].append(
                self.accelerator.gather_for_metrics(margin).mean().item()
            )

    def _weight_mass(self, local_weights, local_groups) -> dict[str, float]:
        """Total worst-case weight on each group of the global batch: `dro/weight_mass/<name>`."""
        weights, _ = distributed.gather(local_weights.detach().double())
        groups, _ = distributed.gather(local_groups.to(local_weights.device))
        mass = torch.zeros(len(self.groups.names), dtype=torch.float64).index_add_(
            0, groups.cpu(), weights.cpu()
        )
        return {f"dro/weight_mass/{n}": v for n, v in zip(self.groups.names, mass.tolist(), strict=True)}


def trl_args(config: RMConfig, output_dir: str, **overrides) -> RobustRewardConfig:
    """RobustRewardConfig for a CPU-friendly run of `config`: fp32, no reports, no checkpoints."""
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        logging_first_step=True,  # so that even a run shorter than logging_steps has a history
        max_length=None,  # pairs are truncated when tokenised, so TRL must not drop any
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    robust = dict(divergence=config.divergence, radius=config.radius, level=config.level)
    trl = trl_overrides(RobustRewardConfig, config.trl_args)
    return RobustRewardConfig(**(kwargs | robust | trl | overrides))


def freeze_lower_layers(model: torch.nn.Module, frozen_layers: int) -> None:
    """Freeze the embeddings and the first `frozen_layers` transformer blocks (BERT- or Llama-style)."""
    if frozen_layers == 0:
        return
    layers = _transformer_layers(model)
    if frozen_layers > len(layers):
        raise ValueError(
            f"frozen_layers must be at most the model's {len(layers)} layers; got {frozen_layers}"
        )
    embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    for module in [embeddings, *layers[:frozen_layers]]:
        module.requires_grad_(False)


def _transformer_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    base = model.base_model
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None) if encoder is not None else getattr(base, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")
    return layers


def train_reward_model(config: RMConfig, save_dir: str | None = None) -> dict:
    """Train and evaluate one reward model on the TRL path; returns the metrics of train/common.py.
    save_dir: where to save the trained model and tokenizer (None: not saved)."""
    from datasets import ClassLabel

    from drostudy.models import load_reward_model
    from drostudy.train.reward_data import evaluate_pairs, prepare_splits, tokenize_pairs

    if config.engine == "cached":
        from drostudy.train.reward_cached import train_cached_reward_model

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
            train_dataset=tokenize_pairs(train, tokenizer, config.max_length, names).cast_column(
                "group", ClassLabel(names=names)
            ),
            processing_class=tokenizer,
        )
        trainer.train()
        if save_dir is not None:
            trainer.save_model(save_dir)  # the model, training_args.bin, drostudy_robust.json
            tokenizer.save_pretrained(save_dir)
    train_s = time.perf_counter() - start
    metrics = evaluate_pairs(model, tokenizer, test, config.max_length, config.batch_size)
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
