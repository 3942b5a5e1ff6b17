"""What both reward-model training loops share: the robust Bradley-Terry objective, its logged metrics, and
which layers are trained.

There are two loops over the same objective. `RobustRewardTrainer` (drostudy.reward.trainer) is TRL's
RewardTrainer and runs the whole model; `train_on_cache` (drostudy.reward.fast) caches the outputs of the
frozen lower layers once per text and runs only the top. Both compute the loss from the rewards with
`bradley_terry_objective` and log `dro_metrics`, and both use TRL's default optimiser (AdamW, linear decay to
0, gradient norm clipped at 1); only the optimiser loop differs, and tests/test_reward_parity.py checks that
one pass over the pairs of a tiny model gives the same per-step losses and parameters on both.

Why two loops and not the fast path as a model handed to the trainer: the cached features are
variable-length float tensors per text, and TRL's RewardTrainer takes token ids through an Arrow dataset and
its own collator; carrying features through that pipeline would mean replacing the dataset, the collator
and the forward, i.e. most of what the trainer does. A 30-line loop sharing the objective is simpler.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drostudy.losses import RobustLoss, robust_bradley_terry_loss, robust_loss
from drostudy.weights import LEVELS


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


def bradley_terry_objective(
    rewards_chosen: torch.Tensor,
    rewards_rejected: torch.Tensor,
    divergence: str,
    radius: float,
    level: str,
    groups: torch.Tensor | None = None,
    margin: torch.Tensor | None = None,
    outlier_fraction: float = 0.0,
    label_smoothing: float = 0.0,
) -> RobustLoss:
    """The (robust) Bradley-Terry loss of one minibatch: rewards (B,) each, groups (B,) integer domain ids.

    level "example": the worst case over the pairs; "group": over the mix of the `groups` in the batch.
    outlier_fraction > 0 (DORO, level "example" only): the largest losses are dropped before the worst case.
    label_smoothing eps > 0: each pair's loss is `smoothed_bradley_terry_loss` (no `margin` then).
    """
    check_choice("level", level, LEVELS)
    if level == "group" and groups is None:
        raise ValueError("level='group' needs a `group` column in the dataset (integer domain ids)")
    if label_smoothing:
        if margin is not None:
            raise ValueError("label_smoothing > 0 takes no `margin`")
        losses = smoothed_bradley_terry_loss(rewards_chosen, rewards_rejected, label_smoothing)
        level_groups = groups if level == "group" else None
        out = robust_loss(losses, divergence, radius, level_groups, outlier_fraction)
        diff = (rewards_chosen - rewards_rejected).detach()
        out.metrics["rewards/accuracy"] = float((diff > 0).double().mean())
        out.metrics["rewards/margins"] = float(diff.double().mean())
        return out
    return robust_bradley_terry_loss(
        rewards_chosen,
        rewards_rejected,
        divergence,
        radius,
        groups=groups if level == "group" else None,
        margin=margin,
        outlier_fraction=outlier_fraction,
    )


def smoothed_bradley_terry_loss(
    rewards_chosen: torch.Tensor, rewards_rejected: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Per-pair Bradley-Terry loss with label smoothing eps: -(1 - eps) log sigma(m) - eps log sigma(-m) on
    the margin m = r_chosen - r_rejected; rewards (B,) each -> (B,). The label says "chosen wins" with
    probability 1 - eps, so the loss stops rewarding margins past log((1 - eps) / eps) (a regulariser)."""
    if isinstance(label_smoothing, bool) or not 0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be a number in [0, 0.5); got {label_smoothing!r}")
    margin = rewards_chosen - rewards_rejected
    return -(1 - label_smoothing) * F.logsigmoid(margin) - label_smoothing * F.logsigmoid(-margin)


def weight_mass(
    weights: np.ndarray, labels: np.ndarray, names: Sequence, prefix: str
) -> dict[str, float]:
    """Total weight on each label of the batch: {f"{prefix}{name}": mass}, 0 for a label absent from it."""
    return {f"{prefix}{name}": float(weights[labels == name].sum()) for name in names}


def dro_metrics(
    out: RobustLoss, groups=None, group_names: Sequence[str] = (), weights=None
) -> dict[str, float]:
    """The `dro/*` metrics of the loss and the weight mass on each group: `dro/weight_mass/<name>`.

    groups (B,): each pair's index into `group_names`, -1 for none (None: no weight mass is logged);
    weights (B,): the weights the groups belong to (default out.weights; the global batch's under DDP).
    """
    metrics = {k: v for k, v in out.metrics.items() if k.startswith("dro/")}
    if groups is None or not group_names:
        return metrics
    w = (out.weights if weights is None else weights).detach().double().cpu().numpy()
    ids = groups.cpu().numpy() if isinstance(groups, torch.Tensor) else np.asarray(groups)
    return metrics | {
        f"dro/weight_mass/{name}": float(w[ids == i].sum()) for i, name in enumerate(group_names)
    }


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
