"""Robust losses: per-example Bradley-Terry / DPO losses and their worst case over a divergence ball.

Paper symbols (docs/methods.md): l_i = `per_example[i]`, w* = `weights`, D = `divergence`, the ball size rho =
`radius` (for cvar the tail fraction alpha), the DPO coefficient beta = `beta`. Every robust loss returns
a `RobustLoss(loss, weights, per_example, metrics)`; weights are detached (Danskin: grad of the robust
loss is sum_i w*_i grad l_i), and under torch.distributed they are computed on the global batch (see
drostudy.distributed for the gradient convention). Functions use their inputs' device and dtype.

Peers on the same per-example DPO losses: Dr. DPO (`dr_dpo_loss`), KLDPO (`kldpo_loss`), group-robust DPO
(`eg_update` + `group_robust_loss`). rDPO is TRL's `DPOConfig(loss_type="robust")` (a label-flip
correction, not DRO), so it has no function here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from drostudy import distributed
from drostudy import weights as dro_weights


class RobustLoss(NamedTuple):
    """What every robust loss returns.

    loss: scalar with grad (the robust objective; its .item() is the global value under distributed).
    weights: (n,) detached weights of the local examples. per_example: (n,) losses l_i with grad.
    metrics: floats under slash keys `dro/robust_loss`, `dro/mean_loss`, `dro/max_weight`,
    `dro/effective_sample_size`, `dro/entropy` (all on the global batch).
    """

    loss: Tensor
    weights: Tensor
    per_example: Tensor
    metrics: dict[str, float]


def weight_metrics(weights: Tensor) -> dict[str, float]:
    """Summaries of a weight vector (N,) summing to 1: max, effective sample size 1/sum w^2, entropy.

    ESS is N for uniform weights and 1 on a vertex; entropy (nats, 0 log 0 = 0) is log N for uniform.
    """
    w = weights.detach().double()
    entropy = -torch.special.xlogy(w, w).sum()
    return {
        "dro/max_weight": float(w.max()),
        "dro/effective_sample_size": float(1.0 / (w * w).sum()),
        "dro/entropy": float(entropy),
    }


def _check_per_example(per_example: Tensor, name: str = "per_example") -> None:
    if per_example.dim() != 1 or per_example.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor (n,); got shape {tuple(per_example.shape)}"
        )


def _check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def _check_positive(value: float, name: str) -> None:
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def _weighted(per_example: Tensor, global_losses: Tensor, global_w: Tensor, local: slice) -> RobustLoss:
    """RobustLoss of global weights (N,) on global detached losses (N,); this process owns `local`."""
    value = (global_w * global_losses).sum()
    loss = distributed.ddp_objective(per_example, global_w[local], value)
    metrics = {"dro/robust_loss": float(value), "dro/mean_loss": float(global_losses.mean())}
    return RobustLoss(loss, global_w[local], per_example, metrics | weight_metrics(global_w))


def robust_loss(
    per_example: Tensor,
    divergence: str = "tv",
    radius: float = 0.0,
    groups: Tensor | None = None,
    outlier_fraction: float = 0.0,
) -> RobustLoss:
    """Worst-case expected loss sum_i w*_i l_i over the ball {q : D(q || uniform) <= radius}.

    per_example: (n,) with grad; groups: (n,) integer ids for group-level robustness (weights over
    groups, shared equally inside a group) or None for per-example weights. radius 0 (cvar: 1) gives the
    ordinary mean. Under torch.distributed with P > 1 processes the weights are those of the global batch
    and `loss` follows the DDP convention of drostudy.distributed (gradient P * sum_local w_i grad l_i,
    value the global robust loss); at radius 0 that is the global mean, which differs from the DDP
    average of local means only when local sizes are uneven. outlier_fraction eps > 0 (per-example
    weights only) is DORO: the worst eps of the batch's mass is dropped before the worst case is taken
    (`drostudy.weights.doro_weights`); radius 0 then gives the trimmed mean.
    """
    _check_per_example(per_example)
    if dro_weights.validate_outlier_fraction(outlier_fraction) > 0 and groups is not None:
        raise ValueError("outlier_fraction > 0 (DORO) needs per-example weights: groups must be None")
    global_losses, local = distributed.gather_losses(per_example)
    if groups is None:
        global_w = dro_weights.worst_case_weights(
            global_losses, divergence, radius, outlier_fraction=outlier_fraction
        )
    else:
        _check_same_shape(per_example, groups, "per_example", "groups")
        global_groups, _ = distributed.gather_groups(groups)
        global_w = dro_weights.group_worst_case_weights(global_losses, global_groups, divergence, radius)
    return _weighted(per_example, global_losses, global_w.detach().to(per_example.dtype), local)


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | None = None
) -> Tensor:
    """Bradley-Terry reward-model loss l_i = -log sigmoid(r(x, y_w) - r(x, y_l) [- margin_i]).

    chosen_rewards, rejected_rewards, margin: (n,). Returns (n,) with grad.
    """
    _check_per_example(chosen_rewards, "chosen_rewards")
    _check_same_shape(chosen_rewards, rejected_rewards, "chosen_rewards", "rejected_rewards")
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        _check_same_shape(chosen_rewards, margin, "chosen_rewards", "margin")
        logits = logits - margin
    return -F.logsigmoid(logits)


def robust_bradley_terry_loss(
    chosen_rewards: Tensor,
    rejected_rewards: Tensor,
    divergence: str = "tv",
    radius: float = 0.0,
    groups: Tensor | None = None,
    margin: Tensor | None = None,
    outlier_fraction: float = 0.0,
) -> RobustLoss:
    """`robust_loss` of `bradley_terry_loss`; inputs (n,).

    Adds `rewards/accuracy` and `rewards/margins` (on the local batch) to the metrics.
    """
    losses = bradley_terry_loss(chosen_rewards, rejected_rewards, margin)
    out = robust_loss(losses, divergence, radius, groups, outlier_fraction)
    diff = (chosen_rewards - rejected_rewards).detach()
    out.metrics["rewards/accuracy"] = float((diff > 0).double().mean())
    out.metrics["rewards/margins"] = float(diff.double().mean())
    return out


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sigmoid DPO: l_i = -log sigmoid(beta * [(pi_w - ref_w) - (pi_l - ref_l)]) on summed log-probs.

    All inputs (n,). Returns (losses (n,) with grad, chosen_rewards (n,), rejected_rewards (n,)) where
    the implicit rewards beta * (log pi - log pi_ref) are detached, as in TRL's DPOTrainer.dpo_loss.
    """
    _check_positive(beta, "beta")
    _check_per_example(policy_chosen_logps, "policy_chosen_logps")
    for name, t in [
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ]:
        _check_same_shape(policy_chosen_logps, t, "policy_chosen_logps", name)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def robust_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    divergence: str = "tv",
    radius: float = 0.0,
    groups: Tensor | None = None,
    outlier_fraction: float = 0.0,
) -> RobustLoss:
    """`robust_loss` of `dpo_loss`; inputs (n,).

    Adds `rewards/accuracy` and `rewards/margins` (on the local batch) to the metrics.
    """
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta
    )
    out = robust_loss(losses, divergence, radius, groups, outlier_fraction)
    out.metrics["rewards/accuracy"] = float((chosen_rewards > rejected_rewards).double().mean())
    out.metrics["rewards/margins"] = float((chosen_rewards - rejected_rewards).double().mean())
    return out


def dr_dpo_loss(per_example: Tensor, beta_prime: float) -> RobustLoss:
    """Dr. DPO (Wu et al., 2025): L = -beta' log mean_i exp(-l_i / beta'), a soft minimum of the losses.

    per_example: (n,) with grad; beta_prime: beta' > 0. L -> mean l as beta' -> inf and -> min l as
    beta' -> 0. Its gradient is sum_i w_i grad l_i with w = softmax(-l / beta') (returned as `weights`),
    which *down*-weights high losses. Computed with logsumexp (stable for any beta'); global batch under
    torch.distributed.
    """
    _check_positive(beta_prime, "beta_prime")
    _check_per_example(per_example)
    global_losses, local = distributed.gather_losses(per_example)
    global_w = torch.softmax(-global_losses / beta_prime, dim=0)
    out = _weighted(per_example, global_losses, global_w, local)
    value = -beta_prime * (
        torch.logsumexp(-global_losses / beta_prime, 0) - math.log(global_losses.numel())
    )
    if distributed.world_size() == 1:
        # The closed form itself, so the value is exact and autograd needs no Danskin argument.
        loss = -beta_prime * (
            torch.logsumexp(-per_example / beta_prime, 0) - math.log(per_example.numel())
        )
    else:
        loss = distributed.ddp_objective(per_example, out.weights, value)
    out.metrics["dro/robust_loss"] = float(value)
    return out._replace(loss=loss)


def kldpo_loss(per_example: Tensor, tau: float, clamp: float = 10.0) -> RobustLoss:
    """KLDPO (Xu et al., 2025): loss = mean_i(v_i l_i), v_i = min(exp((l_i - mean l) / tau), clamp).

    per_example: (n,) with grad; tau > 0 is the temperature, clamp > 0 the cap on v. The raw v is
    detached and NOT renormalised (that is the paper's estimator); `weights` reports v / sum(v) so that
    it sums to 1 like every other RobustLoss, i.e. loss == (sum v / n) * sum(weights * l). Under
    torch.distributed both means run over the global batch (the paper averages over all processes).
    """
    _check_positive(tau, "tau")
    _check_positive(clamp, "clamp")
    _check_per_example(per_example)
    global_losses, local = distributed.gather_losses(per_example)
    raw = torch.exp((global_losses - global_losses.mean()) / tau).clamp(max=clamp)
    value = (raw * global_losses).mean()
    loss = distributed.ddp_objective(per_example, raw[local] / raw.numel(), value)
    global_w = raw / raw.sum()
    metrics = {"dro/robust_loss": float(value), "dro/mean_loss": float(global_losses.mean())}
    metrics["dro/max_raw_weight"] = float(raw.max())
    return RobustLoss(loss, global_w[local], per_example, metrics | weight_metrics(global_w))


def eg_update(q: Tensor, group_losses: Tensor, step: float) -> Tensor:
    """One exponentiated-gradient ascent step on group weights (group-robust DPO, Ramesh et al., 2024).

    q: (G,) on the simplex; group_losses: (G,) mean loss of each group (`group_mean_losses`), NaN for a
    group absent from the batch; step: eta > 0. Returns q' (G,) with q'_g ∝ q_g exp(eta l_g) over the
    present groups, computed in log space. Absent groups keep their mass exactly (no data, no evidence to
    move it); the present groups share the rest. The caller holds q between steps.
    """
    _check_positive(step, "step")
    _check_per_example(q, "q")
    _check_same_shape(q, group_losses, "q", "group_losses")
    if (q < 0).any():
        raise ValueError("q must be non-negative (a distribution over groups)")
    q = q.detach() / q.detach().sum()
    present = ~torch.isnan(group_losses)
    if not q[present].sum() > 0:  # nothing observed, or no mass to move among what was observed
        return q
    logits = torch.log(q[present]) + step * group_losses.detach()[present]
    q_new = q.clone()
    q_new[present] = q[present].sum() * torch.softmax(logits, dim=0)
    return q_new


def group_mean_losses(per_example: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """Detached mean loss of each group over the (global) batch: (n,), ids (n,) -> (G,); NaN: absent."""
    _check_per_example(per_example)
    _check_same_shape(per_example, groups, "per_example", "groups")
    global_losses, _ = distributed.gather_losses(per_example)
    global_groups, _ = distributed.gather_groups(groups)
    sums, counts = _group_sums(global_losses, global_groups, num_groups)
    return sums / counts  # 0 / 0 = NaN marks an absent group, which eg_update leaves alone


def _group_sums(losses: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    if groups.dtype.is_floating_point or (
        groups.numel() and (groups.min() < 0 or groups.max() >= num_groups)
    ):
        raise ValueError(
            f"groups must be integer ids in [0, {num_groups}); got {groups.unique().tolist()}"
        )
    sums = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device).index_add_(
        0, groups, losses
    )
    counts = torch.zeros_like(sums).index_add_(0, groups, torch.ones_like(losses))
    return sums, counts


def group_robust_loss(per_example: Tensor, groups: Tensor, q: Tensor) -> RobustLoss:
    """Group-robust loss sum_g q_g * (mean loss of group g) for given group weights q (G,).

    per_example: (n,) with grad; groups: (n,) integer ids in [0, G). Groups absent from the batch cannot
    contribute, so q is renormalised over the present groups: the per-example weights
    w_i = q_{g_i} / (n_{g_i} * sum_{present} q) sum to 1 and the loss stays on the scale of a mean loss.
    Global batch under torch.distributed.
    """
    _check_per_example(per_example)
    _check_same_shape(per_example, groups, "per_example", "groups")
    _check_per_example(q, "q")
    if (q < 0).any():
        raise ValueError("q must be non-negative (a distribution over groups)")
    global_losses, local = distributed.gather_losses(per_example)
    global_groups, _ = distributed.gather_groups(groups)
    _, counts = _group_sums(global_losses, global_groups, q.numel())
    q = q.detach().to(per_example.dtype)
    q_present = torch.where(counts > 0, q, torch.zeros_like(q))
    if not q_present.sum() > 0:
        raise ValueError("q must put positive mass on at least one group present in the batch")
    global_w = (q_present / q_present.sum() / counts.clamp(min=1))[global_groups]
    return _weighted(per_example, global_losses, global_w, local)
