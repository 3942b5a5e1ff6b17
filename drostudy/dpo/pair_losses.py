"""TRL 1.16's DPO losses per pair, one function per `loss_type`: what `RobustDPOTrainer` reweights.

Each function maps the pairs' log-ratios (`Pairs`) to a loss per pair (n,), as TRL's
`DPOTrainer._compute_loss` computes it before taking the mean (reverse-KL scores). `check_trl_options`
refuses the loss types and options that have no loss per pair (the trainer's module docstring lists them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drostudy.dropin.configs import RobustDPOConfig


@dataclass
class Pairs:
    """What a per-pair loss reads: log-ratios and scores (n,), completion masks (n, T), beta, TRL's args."""

    chosen: torch.Tensor  # log pi(y_w|x) - log pi_ref(y_w|x)
    rejected: torch.Tensor
    chosen_len: torch.Tensor  # completion tokens
    rejected_len: torch.Tensor
    beta: float
    args: RobustDPOConfig

    @property
    def delta(self):
        return self.chosen - self.rejected


def _ipo(p: Pairs):
    return (p.chosen / p.chosen_len - p.rejected / p.rejected_len - 1 / (2 * p.beta)) ** 2


def _exo(p: Pairs):
    z, eps = p.beta * p.delta, torch.tensor(p.args.label_smoothing, device=p.delta.device)
    return torch.sigmoid(z) * (F.logsigmoid(z) - torch.log1p(-eps)) + torch.sigmoid(-z) * (
        F.logsigmoid(-z) - torch.log(eps)
    )


def _rdpo(p: Pairs):
    eps, z = p.args.label_smoothing, p.beta * p.delta
    return (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)


def _discopop(p: Pairs):
    z = p.beta * p.delta
    mix = torch.sigmoid(z / p.args.discopop_tau)
    return -F.logsigmoid(z) * (1 - mix) + torch.exp(-z) * mix


# The per-pair losses of TRL 1.16's DPOTrainer._compute_loss (reverse KL scores), one per loss_type.
PER_PAIR_LOSSES = {
    "sigmoid": lambda p: -F.logsigmoid(p.beta * p.delta),
    "hinge": lambda p: torch.relu(1 - p.beta * p.delta),
    "ipo": _ipo,
    "exo_pair": _exo,
    "nca_pair": lambda p: (
        -F.logsigmoid(p.beta * p.chosen)
        - 0.5 * F.logsigmoid(-p.beta * p.chosen)
        - 0.5 * F.logsigmoid(-p.beta * p.rejected)
    ),
    "robust": _rdpo,
    "bco_pair": lambda p: -F.logsigmoid(p.beta * p.chosen) - F.logsigmoid(-p.beta * p.rejected),
    "sppo_hard": lambda p: (p.chosen - 0.5 / p.beta) ** 2 + (p.rejected + 0.5 / p.beta) ** 2,
    "apo_zero": lambda p: 1 - torch.sigmoid(p.beta * p.chosen) + torch.sigmoid(p.beta * p.rejected),
    "apo_down": lambda p: torch.sigmoid(p.beta * p.chosen) + 1 - torch.sigmoid(p.beta * p.delta),
    "discopop": _discopop,
    "sigmoid_norm": lambda p: (
        -F.logsigmoid(p.beta * (p.chosen / p.chosen_len - p.rejected / p.rejected_len))
    ),
}
NOT_PER_PAIR = {
    "aot": "sorts the batch",
    "aot_unpaired": "sorts the batch",
    "sft": "is a batch token mean",
}


def check_trl_options(args: RobustDPOConfig) -> None:
    """Refuse, at construction, the TRL options a robust objective cannot honour (the list in drostudy.dpo.trainer)."""
    if not args.uses_dro():
        return
    for loss_type in args.loss_type:
        if loss_type not in PER_PAIR_LOSSES:
            why = NOT_PER_PAIR.get(loss_type, "is unknown")
            raise ValueError(
                f"loss_type {loss_type!r} {why}: a robust objective reweights per-pair losses; "
                f"use loss_type among {sorted(PER_PAIR_LOSSES)}"
            )
    if args.f_divergence_type != "reverse_kl" or args.ld_alpha is not None:
        raise ValueError(
            "a robust objective supports f_divergence_type='reverse_kl' and ld_alpha=None only; got "
            f"f_divergence_type={args.f_divergence_type!r}, ld_alpha={args.ld_alpha!r}"
        )
