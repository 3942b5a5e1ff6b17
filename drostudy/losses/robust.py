"""What every robust loss returns, and the worst case of any per-example losses over a divergence ball.

`RobustLoss(loss, weights, per_example, metrics)`: weights are detached (Danskin: the gradient of the
robust loss is sum_i w*_i grad l_i), and under torch.distributed they are computed on the global batch
(see drostudy.distributed for the gradient convention). `robust_loss` is the worst case itself; the input
checks and `weighted_loss` are shared with drostudy.losses.preference, drostudy.losses.peers and
drostudy.wdpo.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
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


def check_per_example(per_example: Tensor, name: str = "per_example") -> None:
    """Raise ValueError unless `per_example` is a non-empty 1-D tensor."""
    if per_example.dim() != 1 or per_example.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D tensor (n,); got shape {tuple(per_example.shape)}"
        )


def check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    """Raise ValueError unless `b` has the shape of `a` (messages name them `name_a`, `name_b`)."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def check_positive(value: float, name: str) -> None:
    """Raise ValueError unless `value` is a finite number > 0."""
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def weighted_loss(
    per_example: Tensor, global_losses: Tensor, global_w: Tensor, local: slice
) -> RobustLoss:
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
    check_per_example(per_example)
    if dro_weights.validate_outlier_fraction(outlier_fraction) > 0 and groups is not None:
        raise ValueError("outlier_fraction > 0 (DORO) needs per-example weights: groups must be None")
    global_losses, local = distributed.gather_losses(per_example)
    if groups is None:
        global_w = dro_weights.worst_case_weights(
            global_losses, divergence, radius, outlier_fraction=outlier_fraction
        )
    else:
        check_same_shape(per_example, groups, "per_example", "groups")
        global_groups, _ = distributed.gather_groups(groups)
        global_w = dro_weights.group_worst_case_weights(global_losses, global_groups, divergence, radius)
    return weighted_loss(per_example, global_losses, global_w.detach().to(per_example.dtype), local)
