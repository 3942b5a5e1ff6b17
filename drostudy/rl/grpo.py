"""`RobustGRPOTrainer`: TRL's GRPOTrainer whose advantages carry worst-case weights over prompts.

The objective is the third stage of docs/methods.md on GRPO's generation batch:

    max_pi  min_{Q: D(Q || uniform) <= radius}  E_{x ~ Q} E_{y ~ pi(.|x)} r(x, y)   -  beta * KL  (nominal).

For a generation batch of P prompts (all processes) with G completions each, the value of prompt p is
v_p = mean_j r(x_p, y_pj), the reward TRL combines over reward functions (reward_weights; completions every
function skipped are left out). The weights are w* = worst_case_weights(-v, divergence, radius) (low value =
high weight; Danskin: w* is a constant for the gradient), or group weights (level 'group' / 'difficulty',
below), and every completion of prompt p has its advantage multiplied by P * w*_p (mean 1).

**After GRPO's group normalisation.** The factor multiplies the final advantages, never the rewards: GRPO
divides each prompt's centred rewards by their group std (`scale_rewards='group'`), which would cancel a
per-prompt reward factor exactly. At radius 0 (cvar: alpha 1) or divergence None nothing is multiplied, so
the trainer *is* TRL's GRPOTrainer.

**The KL term (decision).** GRPO puts beta * KL in the loss, per token, not in the reward. Scaling the
advantages weights the reward part only, so the KL stays a nominal (uniformly weighted) regulariser, and the
value v_p is the reward alone: it is then exactly the objective whose Danskin gradient the scaled loss
follows, and it needs no extra forward pass. TRL's entropy bonus stays nominal the same way.

**Which loss_type.** Each of TRL 1.16's losses is a sum over completions of a term linear in that
completion's advantage A (for a factor s >= 0, min(c1 s A, c2 s A) = s min(c1 A, c2 A)), divided by a
normaliser that does not depend on A; the sign-dependent branches (the clip side, SAPO's temperatures, VESPO's
gamma parameters, the off-policy mask) see the same sign for s > 0, and s = 0 zeroes the term. So scaling
prompt p's advantages by P w_p multiplies exactly prompt p's share of TRL's loss, for every type:
`grpo` / `sapo` (token mean per sequence, mean over sequences: every completion counts equally), `dr_grpo`
(token sum / constant), `luspo` (sequence sums, mean), `dapo` / `cispo` / `vespo` (token sum / tokens of the
generation batch), `bnpo` (token sum / tokens of the micro-batch). The last four weight a completion by its
token count, as TRL does at radius 0: the robust objective is the P w_p-weighted sum of those per-prompt
shares. None is refused; a loss_type TRL adds later is refused until checked (drostudy.dropin.grpo_config).

**The batch.** GRPO generates once per `steps_per_generation` micro-batches and trains on slices of it
(possibly across optimizer steps when steps_per_generation != gradient_accumulation_steps). The weights are
computed once per generation batch in `_generate_and_score_completions`, on the rewards TRL gathers from all
processes (the same on every process); each process scales its own slice.

**Groups.** level='group': the dataset column `group_column`; level='difficulty': bins of each prompt's pass
rate (share of its completions with reward > pass_threshold; Prompt-GDRO). With a ball, the worst case over
groups around their empirical shares (`group_worst_case_weights`); with `group_step`, q <- eg_update(q,
mean -v per group, eta), the trainer holding q (`group_q`) between generation batches, and each prompt of
group g gets q_g / (n_g * sum of q over present groups).

Logged per generation batch: `dro/max_weight`, `dro/effective_sample_size`, `dro/entropy`,
`dro/robust_value` (sum_p w_p v_p), `dro/mean_value`, and per group `dro/weight_mass/<name>` (and `dro/q_<name>`
under EG).
"""

from __future__ import annotations

import torch
from torch import Tensor
from trl import GRPOTrainer

from drostudy.dropin.configs import check_config
from drostudy.dropin.grpo_config import RobustGRPOConfig
from drostudy.dropin.save import GroupColumn, RobustSaveMixin
from drostudy.losses import eg_update, weight_metrics
from drostudy.rl.trainer import completion_scale, prompt_values
from drostudy.weights import group_worst_case_weights, worst_case_weights


def pass_rates(rewards: Tensor, num_generations: int, threshold: float) -> Tensor:
    """Share of each prompt's scored completions with reward > threshold: (P * G,) -> (P,); 0 if none scored."""
    passed = torch.where(torch.isnan(rewards), rewards, (rewards > threshold).to(rewards.dtype))
    rates = torch.nanmean(passed.view(-1, num_generations).double(), dim=1)  # (P, G) -> (P,)
    return torch.nan_to_num(rates, nan=0.0)


def difficulty_bins(rates: Tensor, bins: int) -> Tensor:
    """Bin of each pass rate in [0, 1] among `bins` equal-width bins (rate 1 in the last): (P,) -> (P,) int."""
    return (rates * bins).floor().long().clamp(0, bins - 1)


def group_values(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Mean value of each group: values (P,), ids (P,) -> (num_groups,); NaN for a group with no prompt."""
    sums = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, groups, values)
    counts = torch.zeros_like(sums).index_add_(0, groups, torch.ones_like(values))
    return sums / counts  # 0 / 0 = NaN: absent, which eg_update leaves alone


def eg_prompt_weights(q: Tensor, groups: Tensor) -> Tensor:
    """Per-prompt weights (P,) from group weights q (num_groups,): q_g / (n_g * sum of q over present groups)."""
    counts = torch.zeros_like(q).index_add_(0, groups, torch.ones_like(groups, dtype=q.dtype))
    present = torch.where(counts > 0, q, torch.zeros_like(q))
    if not present.sum() > 0:
        raise ValueError("q must put positive mass on at least one group present in the batch")
    return (present / present.sum() / counts.clamp(min=1))[groups]


class RobustGRPOTrainer(RobustSaveMixin, GRPOTrainer):
    """GRPOTrainer maximising the worst case over the prompts (or groups) of each generation batch.

    args: a RobustGRPOConfig (divergence None or radius 0: the plain GRPOTrainer). Every other argument is
    GRPOTrainer's. `last_weights` (P,) holds the prompt weights of the latest generation batch (all
    processes), `last_advantage_scale` (B_local,) the factors applied to this process's completions, and
    `group_q` the EG group weights (level group/difficulty with group_step).
    """

    def __init__(self, model=None, reward_funcs=None, args=None, *rest, **kwargs):
        check_config(args, RobustGRPOConfig, "RobustGRPOTrainer")
        train_dataset = kwargs.get("train_dataset", rest[0] if rest else None)
        self.groups = GroupColumn()
        if args.needs_groups():
            self.groups = GroupColumn.from_dataset(args, train_dataset, "train_dataset")
        self.group_names = self.groups.names
        if args.level == "difficulty":
            bins = args.difficulty_bins
            self.group_names = tuple(f"pass_{k / bins:.2f}-{(k + 1) / bins:.2f}" for k in range(bins))
        n_groups = max(1, len(self.group_names))
        self.group_q = torch.full((n_groups,), 1.0 / n_groups, dtype=torch.float64)
        self._gathered_rewards: Tensor | None = None  # (N_global, n_funcs) of the current batch
        self.last_weights: Tensor | None = None
        self.last_advantage_scale: Tensor | None = None
        super().__init__(model, reward_funcs, args, *rest, **kwargs)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        return self._gathered_rewards  # (N_global, n_funcs), the same tensor TRL goes on with

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if not self.args.uses_dro():  # TRL's trainer, untouched
            return out
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        rewards = self._global_rewards()  # (P * G,)
        values = prompt_values(rewards, group)  # (P,) reward only: see the module docstring on KL
        groups = self._prompt_groups(inputs, rewards, group)  # (P,) or None
        weights = self._prompt_weights(values, groups, update=mode == "train")
        rank, n_local = self.accelerator.process_index, len(inputs)
        local = slice(rank * n_local, (rank + 1) * n_local)  # TRL's process_slice
        advantages = out["advantages"]
        per_completion = completion_scale(values.numel() * weights, group, local).to(advantages.dtype)
        if self.args.is_robust():  # else the ball is a point: TRL's advantages, bitwise
            factor = per_completion.to(advantages.device)
            out["advantages"] = advantages * factor.view(-1, *[1] * (advantages.dim() - 1))
        self.last_weights, self.last_advantage_scale = weights, per_completion
        self._log(mode, weights, values, groups)
        return out

    def _global_rewards(self) -> Tensor:
        """(N_global,) rewards combined over reward functions as TRL combines them (NaN: unscored)."""
        per_func = self._gathered_rewards
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        return rewards.detach().cpu()

    def _prompt_groups(self, inputs: list[dict], rewards: Tensor, group: int) -> Tensor | None:
        """(P,) group id of every prompt of the global batch (level group/difficulty), else None."""
        args = self.args
        if args.level == "difficulty":
            return difficulty_bins(pass_rates(rewards, group, args.threshold()), args.difficulty_bins)
        if args.level != "group":
            return None
        column = args.group_column
        if any(column not in row for row in inputs):
            raise ValueError(f"level='group' needs the {column!r} column (group_column) in every prompt")
        raw = [row[column] for row in inputs]
        ids = torch.tensor(
            [self.groups.ids[v] for v in raw] if self.groups.ids else raw, dtype=torch.long
        )
        ids = self.accelerator.gather(ids.to(self.accelerator.device)).cpu()  # (N_global,)
        return ids.view(-1, group)[:, 0]  # (P * G,) -> (P,): a prompt's completions share its group

    def _prompt_weights(self, values: Tensor, groups: Tensor | None, update: bool) -> Tensor:
        """(P,) prompt weights summing to 1: the ball over prompts or groups, or EG over groups."""
        args = self.args
        if groups is None:
            return worst_case_weights(-values, args.divergence, args.radius)
        if args.group_step is None:
            return group_worst_case_weights(-values, groups, args.divergence, args.radius)
        if update:  # one EG step per generation batch; evaluation only reads q
            losses = -group_values(values, groups, self.group_q.numel())
            self.group_q = eg_update(self.group_q, losses, args.group_step)
        return eg_prompt_weights(self.group_q, groups).to(values.dtype)

    def _log(self, mode: str, weights: Tensor, values: Tensor, groups: Tensor | None) -> None:
        metrics = weight_metrics(weights)
        metrics["dro/robust_value"] = float((weights * values).sum())
        metrics["dro/mean_value"] = float(values.mean())
        if groups is not None:
            mass = torch.zeros(len(self.group_names), dtype=torch.float64).index_add_(
                0, groups, weights.double()
            )
            metrics |= {
                f"dro/weight_mass/{n}": float(m) for n, m in zip(self.group_names, mass, strict=True)
            }
            if self.args.group_step is not None:
                metrics |= {
                    f"dro/q_{n}": float(q) for n, q in zip(self.group_names, self.group_q, strict=True)
                }
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
