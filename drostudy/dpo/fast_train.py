"""Training on the cached trunk (drostudy.dpo.fast): the fast path's config, its objective per batch, the loop.

`objective` maps the per-pair log-probs to every loss of notebook 03 (drostudy.losses) plus WDPO, whose
penalty here is taken w.r.t. the cached states entering the first trainable block, not the token
embeddings: the embeddings' gradient flows through the frozen blocks, which the cache skips, and running
them (with double backprop) would cost the full model again. Perturbing the features the trainable part
reads is the same Wasserstein-ball argument (Xu et al. treat the policy as a function of a feature
vector) on the representation that LoRA can actually change its answer to; it is not the paper's
token-embedding penalty, and its radius is on a different scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from drostudy import losses as dro_losses
from drostudy import wdpo
from drostudy.dpo.config import DPORunConfig
from drostudy.dpo.fast import TrunkCache, pair_logps


@dataclass(frozen=True)
class FastDPORunConfig(DPORunConfig):
    """DPORunConfig plus WDPO, for the fast path."""

    wdpo_radius: float = 0.0
    """WDPO's Wasserstein radius rho (loss ordinary only): adds rho * RMS gradient norm w.r.t. the states
    entering the first trainable block (this module's docstring); 0 is off"""
    generate: bool = True
    """greedy answers (`correct`, `correct_before`, `n_generate` prompts per domain); off leaves both metrics
    out: generation runs the full model token by token and costs more per prompt than a training pair"""

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.wdpo_radius < float("inf"):
            raise ValueError(f"wdpo_radius must be a finite number >= 0; got {self.wdpo_radius!r}")
        if self.wdpo_radius > 0 and self.loss != "ordinary":
            raise ValueError(f"wdpo_radius > 0 needs loss 'ordinary'; got loss {self.loss!r}")

    @property
    def method(self) -> str:
        """`wdpo` when its radius is > 0, else DPORunConfig's method."""
        return "wdpo" if self.wdpo_radius > 0 else super().method


def rdpo_losses(
    chosen, rejected, ref_chosen, ref_rejected, beta: float, label_smoothing: float
) -> Tensor:
    """rDPO per-pair losses (n,), as TRL's loss_type="robust": the label-flip-corrected sigmoid loss."""
    delta = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(delta) + eps * F.logsigmoid(-delta)) / (1 - 2 * eps)


def objective(
    config: FastDPORunConfig, logps, ref, groups=None, q=None, states=None
) -> tuple[dro_losses.RobustLoss, Tensor | None]:
    """The loss `config.loss` of notebook 03 on one batch: (RobustLoss, updated group weights q or None).

    config: its loss, beta, divergence, radius, reg, group_step, label_smoothing and wdpo_radius are read;
    logps, ref: (chosen (B,), rejected (B,)) of the policy and reference; groups: (B,) domain ids (loss
    "group_eg"); q: (G,) group weights before this training step; states: the (2B, ...) tensor the
    log-probs were computed from, for WDPO (`wdpo_radius` > 0).
    """
    beta, loss = config.beta, config.loss
    chosen, rejected = logps
    ref = tuple(r.to(chosen) for r in ref)
    if loss == "robust":
        args = {"divergence": config.divergence, "radius": config.radius}
        return dro_losses.robust_dpo_loss(chosen, rejected, *ref, beta=beta, **args), q
    if loss == "rdpo":
        per_example = rdpo_losses(chosen, rejected, *ref, beta, config.label_smoothing)
        return dro_losses.robust_loss(per_example), q
    per_example, _, _ = dro_losses.dpo_loss(chosen, rejected, *ref, beta=beta)
    wdpo_radius = config.wdpo_radius
    if wdpo_radius > 0:
        if loss != "ordinary" or states is None:
            raise ValueError(
                "wdpo_radius > 0 needs loss 'ordinary' and the states (pair_logps with_states)"
            )
        return wdpo.wdpo_loss(per_example, states, wdpo_radius), q
    if loss == "ordinary":
        return dro_losses.robust_loss(per_example), q
    if loss == "dr_dpo":
        return dro_losses.dr_dpo_loss(per_example, config.reg), q
    if loss == "kldpo":
        return dro_losses.kldpo_loss(per_example, config.reg), q
    if loss != "group_eg":
        raise ValueError(f"unknown loss {loss!r}")
    groups = groups.to(per_example.device)
    group_losses = dro_losses.group_mean_losses(per_example, groups, q.numel())
    q = dro_losses.eg_update(q, group_losses.double().cpu(), config.group_step)
    out = dro_losses.group_robust_loss(per_example, groups, q.to(per_example.device))
    out.metrics.update({f"dro/q_{g}": float(value) for g, value in enumerate(q)})
    return out, q


def batch_order(n: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """Index batches (B,) for `steps` steps: epoch e is a permutation of range(n) drawn from seed + e (as
    accelerate's seedable sampler), cut into batches; the last batch of an epoch may be short."""
    batches, epoch = [], 0
    while len(batches) < steps:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        batches += list(order.split(batch_size))
        epoch += 1
    return batches[:steps]


def train(
    config: FastDPORunConfig,
    model,
    cache: TrunkCache,
    pairs,
    groups: Tensor,
    progress: bool = True,
    callback=None,
):
    """Train the LoRA weights of `model` on `pairs` with `config`'s loss; returns the per-step history.

    As TRL's Trainer: AdamW (lr `config.learning_rate`, weight decay 0), linear decay to 0 over
    `config.steps` without warm-up, gradient norm clipped at 1, batches of `config.batch_size` pairs in the
    order `batch_order` draws from `config.seed`. groups: (n,) domain ids. History keys: step, loss,
    grad_norm, learning_rate, step_s and the objective's metrics (dro/*, rewards/*, wdpo/*).
    `callback(step)`, if given, runs after each optimiser step (1-based), e.g. to evaluate.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: max(0.0, 1 - s / config.steps))
    ref_chosen, ref_rejected = cache.reference_logps(pairs)
    num_groups = len(config.train_domains)
    q = torch.full((num_groups,), 1.0 / num_groups, dtype=torch.float64)
    with_states = config.wdpo_radius > 0
    model.train()
    history = []
    batches = batch_order(len(pairs), config.batch_size, config.steps, config.seed)
    for step, index in enumerate(tqdm(batches, desc="fast DPO", disable=not progress, leave=False)):
        start = time.perf_counter()
        logps = pair_logps(model, cache, [pairs[i] for i in index.tolist()], with_states)
        states = logps[2] if with_states else None
        ref = (ref_chosen[index], ref_rejected[index])
        out, q = objective(config, logps[:2], ref, groups[index], q, states)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        learning_rate = schedule.get_last_lr()[0]
        optimiser.step()
        schedule.step()
        optimiser.zero_grad(set_to_none=True)
        history.append(
            {
                "step": step + 1,
                "loss": float(out.loss.detach()),
                "grad_norm": float(grad_norm),
                "learning_rate": learning_rate,
                "step_s": time.perf_counter() - start,
                **out.metrics,
            }
        )
        if callback is not None:
            callback(step + 1)
    return history
