"""DPO's robust peers on the same per-example losses: Dr. DPO, KLDPO and group-robust DPO.

Dr. DPO (`dr_dpo_loss`) and KLDPO (`kldpo_loss`) reweight the batch by a temperature instead of a ball;
group-robust DPO holds group weights q between steps (`eg_update`, `group_mean_losses`) and weights the
batch by them (`group_robust_loss`). Each returns a RobustLoss like the divergence-ball losses, computed
on the global batch under torch.distributed. WDPO, which needs a second backward pass, is drostudy.wdpo.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from drostudy import distributed
from drostudy.losses.robust import (
    RobustLoss,
    check_per_example,
    check_positive,
    check_same_shape,
    weight_metrics,
    weighted_loss,
)


def dr_dpo_loss(per_example: Tensor, reg: float) -> RobustLoss:
    """Dr. DPO (Wu et al., 2025): L = -beta' log mean_i exp(-l_i / beta'), a soft minimum of the losses.

    per_example: (n,) with grad; reg: the temperature beta' > 0. L -> mean l as beta' -> inf and -> min l
    as beta' -> 0. Its gradient is sum_i w_i grad l_i with w = softmax(-l / beta') (returned as `weights`),
    which *down*-weights high losses. Computed with logsumexp (stable for any beta'); global batch under
    torch.distributed.
    """
    check_positive(reg, "reg")
    check_per_example(per_example)
    global_losses, local = distributed.gather_losses(per_example)
    global_w = torch.softmax(-global_losses / reg, dim=0)
    out = weighted_loss(per_example, global_losses, global_w, local)
    value = -reg * (torch.logsumexp(-global_losses / reg, 0) - math.log(global_losses.numel()))
    if distributed.world_size() == 1:
        # The closed form itself, so the value is exact and autograd needs no Danskin argument.
        loss = -reg * (torch.logsumexp(-per_example / reg, 0) - math.log(per_example.numel()))
    else:
        loss = distributed.ddp_objective(per_example, out.weights, value)
    out.metrics["dro/robust_loss"] = float(value)
    return out._replace(loss=loss)


def kldpo_loss(per_example: Tensor, reg: float, clamp: float = 10.0) -> RobustLoss:
    """KLDPO (Xu et al., 2025): loss = mean_i(v_i l_i), v_i = min(exp((l_i - mean l) / tau), clamp).

    per_example: (n,) with grad; reg: the temperature tau > 0; clamp > 0 the cap on v. The raw v is
    detached and NOT renormalised (that is the paper's estimator); `weights` reports v / sum(v) so that
    it sums to 1 like every other RobustLoss, i.e. loss == (sum v / n) * sum(weights * l). Under
    torch.distributed both means run over the global batch (the paper averages over all processes).
    """
    check_positive(reg, "reg")
    check_positive(clamp, "clamp")
    check_per_example(per_example)
    global_losses, local = distributed.gather_losses(per_example)
    raw = torch.exp((global_losses - global_losses.mean()) / reg).clamp(max=clamp)
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
    check_positive(step, "step")
    check_per_example(q, "q")
    check_same_shape(q, group_losses, "q", "group_losses")
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
    check_per_example(per_example)
    check_same_shape(per_example, groups, "per_example", "groups")
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
    check_per_example(per_example)
    check_same_shape(per_example, groups, "per_example", "groups")
    check_per_example(q, "q")
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
    return weighted_loss(per_example, global_losses, global_w, local)
