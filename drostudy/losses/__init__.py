"""Robust losses: per-example Bradley-Terry / DPO losses and their worst case over a divergence ball.

Paper symbols (docs/methods.md): l_i = `per_example[i]`, w* = `weights`, D = `divergence`, the ball size rho =
`radius` (for cvar the tail fraction alpha), the DPO coefficient beta = `beta`. Every robust loss returns
a `RobustLoss(loss, weights, per_example, metrics)`; weights are detached (Danskin: grad of the robust
loss is sum_i w*_i grad l_i), and under torch.distributed they are computed on the global batch (see
drostudy.distributed for the gradient convention). Functions use their inputs' device and dtype.

Peers on the same per-example DPO losses: Dr. DPO (`dr_dpo_loss`), KLDPO (`kldpo_loss`), group-robust DPO
(`eg_update` + `group_robust_loss`). rDPO is TRL's `DPOConfig(loss_type="robust")` (a label-flip
correction, not DRO), so it has no function here.

The package's modules: `robust` (RobustLoss and the worst case of any per-example losses), `preference`
(Bradley-Terry and DPO losses and their robust versions) and `peers` (Dr. DPO, KLDPO, group-robust DPO).
Every public name is imported from drostudy.losses itself.
"""

from drostudy.losses.peers import (
    dr_dpo_loss,
    eg_update,
    group_mean_losses,
    group_robust_loss,
    kldpo_loss,
)
from drostudy.losses.preference import (
    bradley_terry_loss,
    dpo_loss,
    robust_bradley_terry_loss,
    robust_dpo_loss,
)
from drostudy.losses.robust import RobustLoss, robust_loss, weight_metrics

__all__ = [
    "RobustLoss",
    "bradley_terry_loss",
    "dpo_loss",
    "dr_dpo_loss",
    "eg_update",
    "group_mean_losses",
    "group_robust_loss",
    "kldpo_loss",
    "robust_bradley_terry_loss",
    "robust_dpo_loss",
    "robust_loss",
    "weight_metrics",
]
