"""Robust Bradley-Terry reward models on TRL: `RobustRewardTrainer`, TRL's RewardTrainer with one change.

The mean of the per-pair Bradley-Terry losses l_i = -log sigmoid(r(x, y_w) - r(x, y_l)) becomes the worst
case sum_i w*_i l_i over a divergence ball of `radius` around the uniform minibatch distribution
(drostudy.reward.objective, on drostudy.losses.robust_bradley_terry_loss), per pair (`level="example"`,
robust over prompts: one pair per prompt) or per training domain (`level="group"`). Under several processes
the weights are those of the global batch. radius 0 (cvar: 1) is TRL's loss.
"""

from __future__ import annotations

import dataclasses

import torch
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from drostudy import distributed
from drostudy.reward.objective import LEVELS, bradley_terry_objective, check_choice, dro_metrics
from drostudy.weights import validate_radius


@dataclasses.dataclass
class DataCollatorWithGroups(DataCollatorForPreference):
    """TRL's preference collator that also carries each pair's integer `group` id (its domain) as (B,)."""

    def torch_call(self, examples: list[dict]) -> dict:
        batch = super().torch_call(examples)
        if "group" in examples[0]:
            batch["group"] = torch.tensor([int(ex["group"]) for ex in examples], dtype=torch.long)
        return batch


class RobustRewardTrainer(RewardTrainer):
    """RewardTrainer minimising the worst-case Bradley-Terry loss over a divergence ball.

    divergence, radius: the ball (drostudy.weights); level: "example" (weights over pairs) or "group"
    (weights over the `group` ids of the batch); group_names: the name of each group id, used for the
    logged weight mass `dro/weight_mass/<name>`. Logs TRL's metrics plus `dro/*` (global batch).
    """

    def __init__(
        self,
        *args,
        divergence="tv",
        radius=0.0,
        level="example",
        group_names=(),
        outlier_fraction=0.0,
        **kwargs,
    ):
        self.divergence, self.radius = divergence, validate_radius(divergence, radius)
        check_choice("level", level, LEVELS)
        self.level, self.group_names = level, tuple(group_names)
        self.outlier_fraction = outlier_fraction
        super().__init__(*args, **kwargs)
        if isinstance(self.data_collator, DataCollatorForPreference) and not isinstance(
            self.data_collator, DataCollatorWithGroups
        ):
            self.data_collator = DataCollatorWithGroups(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
            )

    def _set_signature_columns_if_needed(self):
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "group"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        groups = inputs.pop("group", None)
        margin = inputs.pop("margin", None)
        inputs["use_cache"] = False
        outputs = model(**inputs)
        rewards_chosen, rewards_rejected = torch.chunk(
            outputs.logits.squeeze(-1), chunks=2
        )  # (2B,) -> 2 x (B,)
        out = bradley_terry_objective(
            rewards_chosen,
            rewards_rejected,
            self.divergence,
            self.radius,
            self.level,
            groups,
            margin,
            self.outlier_fraction,
        )
        loss = out.loss
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean(
                (rewards_chosen + rewards_rejected) ** 2
            )
        self._log_trl_metrics(mode, inputs, outputs.logits, rewards_chosen, rewards_rejected)
        for key, value in self._dro_metrics(out, groups).items():
            self._metrics[mode][key].append(value)
        return (loss, outputs) if return_outputs else loss

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

    def _dro_metrics(self, out, local_groups) -> dict[str, float]:
        """dro/* and the total worst-case weight on each group of the global batch (`dro/weight_mass/<name>`)."""
        if local_groups is None or not self.group_names:
            return dro_metrics(out)
        weights, _ = distributed.gather(out.weights.detach().double())
        groups, _ = distributed.gather(local_groups.to(out.weights.device))
        return dro_metrics(out, groups, self.group_names, weights)


def trl_args(config, output_dir: str, **overrides) -> RewardConfig:
    """TRL RewardConfig for a CPU-friendly run of `config` (an RMConfig): fp32, no reports, no checkpoints."""
    kwargs = dict(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
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
    return RewardConfig(**(kwargs | overrides))
