"""The per-example losses of reward models (Bradley-Terry) and of DPO, and their robust versions.

Each `robust_*` loss is `drostudy.losses.robust.robust_loss` of its per-example losses, with the
`rewards/accuracy` and `rewards/margins` metrics of the local batch added.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from drostudy.losses.robust import (
    RobustLoss,
    check_per_example,
    check_positive,
    check_same_shape,
    robust_loss,
)


def bradley_terry_loss(
    chosen_rewards: Tensor, rejected_rewards: Tensor, margin: Tensor | None = None
) -> Tensor:
    """Bradley-Terry reward-model loss l_i = -log sigmoid(r(x, y_w) - r(x, y_l) [- margin_i]).

    chosen_rewards, rejected_rewards, margin: (n,). Returns (n,) with grad.
    """
    check_per_example(chosen_rewards, "chosen_rewards")
    check_same_shape(chosen_rewards, rejected_rewards, "chosen_rewards", "rejected_rewards")
    logits = chosen_rewards - rejected_rewards
    if margin is not None:
        check_same_shape(chosen_rewards, margin, "chosen_rewards", "margin")
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
    check_positive(beta, "beta")
    check_per_example(policy_chosen_logps, "policy_chosen_logps")
    for name, t in [
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
    ]:
        check_same_shape(policy_chosen_logps, t, "policy_chosen_logps", name)
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
