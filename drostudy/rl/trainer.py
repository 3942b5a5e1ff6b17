"""`RobustRLOOTrainer`: TRL's RLOOTrainer whose advantages carry worst-case weights over prompts.

The objective (docs/methods.md: the third stage of Mandal, Sasnauskas and Radanovic, 2025) is

    max_pi  min_{Q: D(Q || uniform) <= radius}  E_{x ~ Q} [ E_{y ~ pi(.|x)} r(x, y) - beta KL(pi(.|x) || pi_ref(.|x)) ].

For a generation batch of P prompts with G sampled completions each, the value of prompt p is

    v_p = mean_j [ r(x_p, y_pj) - beta * KL_pj ],     KL_pj = sum_t log pi_old(y_t) - log pi_ref(y_t)

i.e. exactly the KL-penalised reward TRL's RLOO builds its advantages from (reward-function weights and
reward clipping applied as TRL does; completions every reward function skipped are left out). The worst
case over prompts is w* = worst_case_weights(-v, divergence, radius) (low value = high weight; Danskin:
w* is a constant for the gradient), and every completion of prompt p has its RLOO advantage multiplied by
P * w*_p before the clipped surrogate. The factor has mean 1, so the loss keeps the plain trainer's scale.
At radius 0 (cvar: alpha 1) the advantages are left untouched, so the trainer *is* the plain RLOOTrainer.
The factor multiplies the final advantages (after TRL's optional `normalize_advantages`), never the rewards:
a normalisation by the reward spread (GRPO's group std) would otherwise cancel it.

Under several processes TRL gathers the rewards of the whole generation batch on every process; the values
and weights are computed on that global batch (the same on every process) and each process scales its own
slice. Logged per generation batch: `dro/max_weight`, `dro/effective_sample_size`, `dro/entropy` (of the
prompt weights), `dro/robust_value` (sum_p w*_p v_p) and `dro/mean_value`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from trl import RLOOTrainer

from drostudy.dropin.configs import RobustRLOOConfig, check_config
from drostudy.dropin.save import GroupColumn, RobustSaveMixin
from drostudy.losses import weight_metrics
from drostudy.weights import ball_is_point, worst_case_weights


def prompt_values(
    rewards: Tensor, num_generations: int, kl: Tensor | None = None, beta: float = 0.0
) -> Tensor:
    """Per-prompt value v_p = mean over its completions of (reward - beta * KL): (P * G,) -> (P,).

    rewards: (P * G,) one row per completion, the G completions of a prompt consecutive (TRL's order);
    NaN marks an unscored completion, left out of its prompt's mean. kl: (P * G,) sequence KL or None.
    A prompt with no scored completion gets the mean value of the others (it has zero advantages anyway).
    """
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(
            f"rewards must be 1-D with a multiple of num_generations={num_generations} rows; "
            f"got shape {tuple(rewards.shape)}"
        )
    total = rewards if kl is None or beta == 0.0 else rewards - beta * kl
    values = torch.nanmean(total.view(-1, num_generations).double(), dim=1)  # (P, G) -> (P,)
    missing = torch.isnan(values)
    if missing.all():
        return torch.zeros_like(values)
    return torch.where(missing, values[~missing].mean(), values)


def advantage_scale(values: Tensor, divergence: str, radius: float) -> tuple[Tensor, Tensor]:
    """(scale (P,), weights (P,)) for per-prompt values (P,): w* = worst case of the losses -v, scale = P * w*.

    Low value = high weight. At radius 0 (cvar: 1) the weights are 1/P and the scale is 1 within one ulp;
    `RobustRLOOTrainer` skips the multiplication there so the plain trainer is reproduced bitwise.
    """
    weights = worst_case_weights(-values, divergence, radius)
    return values.numel() * weights, weights


def completion_scale(scale: Tensor, num_generations: int, local: slice) -> Tensor:
    """Per-completion factors of this process: per-prompt scale (P,) -> (B_local,).

    Completions are laid out as TRL gathers them: G consecutive rows per prompt, processes end to end, and
    `local` is this process's slice of those P * G rows.
    """
    return scale.repeat_interleave(num_generations)[local]


class RobustRLOOTrainer(RobustSaveMixin, RLOOTrainer):
    """RLOOTrainer maximising the worst case over prompts of the KL-penalised value (module docstring).

    args: a RobustRLOOConfig, whose divergence and radius are the ball of drostudy.weights (divergence None
    or radius 0: the plain RLOOTrainer). The ball covers one generation batch, which TRL by default makes
    the optimizer batch (steps_per_generation = gradient_accumulation_steps, all processes). Every other
    argument is RLOOTrainer's. `last_advantage_scale` holds the (local, per completion) factors applied to
    the latest generation batch, for inspection and tests.
    """

    def __init__(self, model=None, reward_funcs=None, args=None, *rest, **kwargs):
        check_config(args, RobustRLOOConfig, "RobustRLOOTrainer")
        self.divergence, self.radius = args.divergence or "tv", args.radius
        self.groups = GroupColumn()
        self._capture: list[Tensor] | None = None  # no-grad log-prob passes of the current batch
        self._gathered_rewards: Tensor | None = None  # (N_global, n_funcs) of the current batch
        self.last_advantage_scale: Tensor | None = None
        super().__init__(model, reward_funcs, args, *rest, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._capture is not None and not torch.is_grad_enabled():
            self._capture.append(out[0])  # (B, C): first the policy's, then (beta != 0) the reference's
        return out

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._gathered_rewards = super()._calculate_rewards(
            inputs, prompts, completions, completion_ids_list
        )
        return self._gathered_rewards  # (N_global, n_funcs), the same tensor TRL goes on with

    def _generate_and_score_completions(self, inputs):
        if not self.args.uses_dro():  # TRL's trainer, untouched
            return super()._generate_and_score_completions(inputs)
        self._capture = []
        try:
            out = super()._generate_and_score_completions(inputs)
            logps = self._capture
        finally:
            self._capture = None
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        values = prompt_values(self._global_rewards(), group, self._global_kl(logps, out), self.beta)
        scale, weights = advantage_scale(values, self.divergence, self.radius)
        rank, n_local = self.accelerator.process_index, len(inputs)
        local = slice(rank * n_local, (rank + 1) * n_local)  # TRL's process_slice
        per_completion = completion_scale(scale, group, local).to(out["advantages"].dtype)
        if not ball_is_point(self.divergence, self.radius):
            out["advantages"] = out["advantages"] * per_completion.to(out["advantages"].device)
        self.last_advantage_scale = per_completion
        metrics = weight_metrics(weights)
        metrics["dro/robust_value"] = float((weights * values).sum())
        metrics["dro/mean_value"] = float(values.mean())
        for key, value in metrics.items():
            self._metrics[mode][key].append(value)
        return out

    def _global_rewards(self) -> Tensor:
        """(N_global,) rewards combined over reward functions exactly as TRL combines them."""
        per_func = self._gathered_rewards
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(per_func).all(dim=1)] = torch.nan
        if self.reward_clip_range:
            rewards = rewards.clamp(min=self.reward_clip_range[0], max=self.reward_clip_range[1])
        return rewards

    def _global_kl(self, logps: list[Tensor], out: dict) -> Tensor | None:
        """(N_global,) sequence KL log pi_old - log pi_ref summed over completion tokens, or None (beta 0)."""
        if self.beta == 0.0:
            return None
        if len(logps) != 2:
            raise RuntimeError(f"expected the policy and reference log-prob passes; saw {len(logps)}")
        kl = ((logps[0] - logps[1]) * out["completion_mask"]).sum(-1)  # (B, C) -> (B,)
        return self.accelerator.gather(kl)
