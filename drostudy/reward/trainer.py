"""Robust Bradley-Terry reward models on TRL: `RobustRewardTrainer`, TRL's RewardTrainer with one change.

The mean of the per-pair Bradley-Terry losses l_i = -log sigmoid(r(x, y_w) - r(x, y_l)) becomes the worst
case sum_i w*_i l_i over a divergence ball of `radius` around the uniform distribution of the optimizer batch
(micro-batches x accumulation steps x processes; drostudy.dropin.batch), per pair (`level="example"`,
robust over prompts: one pair per prompt) or per group (`level="group"`). The settings come from
`RobustRewardConfig` (drostudy.dropin.configs); with `divergence=None` the trainer is TRL's, bitwise.
The loss from rewards is the one the cached fast path uses too (drostudy.reward.fast; both reduce to
drostudy.losses.robust_loss on drostudy.losses.bradley_terry_loss, checked by tests/test_reward_parity.py).
"""

from __future__ import annotations

import dataclasses

import torch
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from drostudy import distributed
from drostudy.dropin.batch import OptimizerBatchMixin
from drostudy.dropin.cli import trl_overrides
from drostudy.dropin.configs import RobustRewardConfig, check_config
from drostudy.dropin.save import GroupColumn, RobustSaveMixin
from drostudy.losses import RobustLoss, bradley_terry_loss, robust_loss
from drostudy.runs import trl_run_fields


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
        out = robust_loss(per_example, args.divergence, args.radius, level_groups, args.outlier_fraction)
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


def trl_args(config, output_dir: str, **overrides) -> RobustRewardConfig:
    """RobustRewardConfig for a CPU-friendly run of `config` (an RMConfig): fp32, no reports, no checkpoints."""
    kwargs = trl_run_fields(config, output_dir) | dict(
        per_device_train_batch_size=config.batch_size,
        max_steps=config.steps,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        logging_first_step=True,  # so that even a run shorter than logging_steps has a history
        max_length=None,  # pairs are truncated when tokenised, so TRL must not drop any
        disable_tqdm=True,
    )
    robust = dict(divergence=config.divergence, radius=config.radius, level=config.level)
    robust |= {"outlier_fraction": config.outlier_fraction}
    trl = trl_overrides(RobustRewardConfig, config.trl_args)
    return RobustRewardConfig(**(kwargs | robust | trl | overrides))
