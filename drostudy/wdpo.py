"""WDPO (Xu et al., 2025): the DPO loss plus a gradient penalty on the input embeddings (docs/methods.md).

Kept apart from drostudy.losses because, unlike the divergence-ball losses there, it needs the tensor the
losses were computed from and a second backward pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from drostudy.losses.robust import RobustLoss, check_per_example, weight_metrics


def wdpo_loss(per_example: Tensor, embeddings: Tensor, radius: float = 0.0) -> RobustLoss:
    """WDPO (Xu et al., 2025): L = mean_i l_i + rho * sqrt(mean_i ||grad_{x_i} l_i||^2).

    The gradient penalty is the first-order form of the worst case over a Wasserstein ball of radius rho
    (`radius`) around the inputs x_i; `loss` keeps it differentiable (double backprop, create_graph).
    per_example: (n,) losses with grad, functions of `embeddings` (k * n, ...) with grad, whose row j
    belongs to example j % n (TRL's [chosen; rejected] rows: k = 2). Each l_i must depend on its own rows
    only (true of a transformer batch: padding is masked), so one backward of sum_i l_i gives every
    example's gradient in its own rows. radius 0 returns the plain mean exactly (the norm is still
    reported). Weights are uniform; metrics add `wdpo/grad_norm` (the root mean square norm) and
    `wdpo/penalty`. The mean runs over the local batch (no distributed gather). The forward must be twice
    differentiable: the fused SDPA attention kernels have no double backward, so run it under
    `torch.nn.attention.sdpa_kernel(SDPBackend.MATH)` (drostudy.dpo.fast does) or eager attention.
    """
    check_per_example(per_example)
    if not radius >= 0 or not math.isfinite(radius):
        raise ValueError(f"radius must be a finite number >= 0; got {radius!r}")
    n = per_example.numel()
    if embeddings.dim() < 1 or embeddings.shape[0] % n:
        raise ValueError(
            f"embeddings must have k * n rows (n = {n} examples); got shape {tuple(embeddings.shape)}"
        )
    if not embeddings.requires_grad:
        raise ValueError(
            "embeddings must require grad (the loss is differentiated with respect to them)"
        )
    (grad,) = torch.autograd.grad(
        per_example.sum(), embeddings, create_graph=radius > 0, retain_graph=True
    )
    squared = grad.reshape(embeddings.shape[0] // n, n, -1).pow(2).sum(dim=(0, 2))  # (k, n, d) -> (n,)
    grad_norm = squared.mean().sqrt()
    mean = per_example.mean()
    loss = mean + radius * grad_norm if radius > 0 else mean
    weights = torch.full_like(per_example, 1.0 / n).detach()
    metrics = {"dro/robust_loss": float(loss.detach()), "dro/mean_loss": float(mean.detach())}
    grad_norm = float(grad_norm.detach())
    metrics |= {"wdpo/grad_norm": grad_norm, "wdpo/penalty": radius * grad_norm}
    return RobustLoss(loss, weights, per_example, metrics | weight_metrics(weights))
