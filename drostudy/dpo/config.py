"""`DPORunConfig`: one DPO run of the `dpo` command (drostudy.dpo.run) and of notebook 03 (drostudy.dpo.study).

The names are the study's vocabulary (drostudy.config, the README's table): `reg` is the temperature of the
penalised peers (Dr. DPO's beta', KLDPO's tau), the group-robust objective is `group_eg`, `n_eval` 0 means
every held-out pair, and `max_length` leaves longer pairs out rather than truncating them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

from drostudy.config import method_label, setting_label
from drostudy.runs import PolicyRunFields

LOSSES = ("ordinary", "robust", "dr_dpo", "kldpo", "group_eg", "rdpo")
RENAMED_LOSSES = {"group": "group_eg"}  # old loss value -> its name now; parses with a FutureWarning


@dataclass(frozen=True)
class DPORunConfig(PolicyRunFields):
    # old flag -> field (drostudy.config.RENAMED_FIELDS): they still parse, with a FutureWarning
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"beta_prime": "reg", "tau": "reg"}

    loss: str = "ordinary"
    """objective: ordinary, robust, dr_dpo, kldpo, group_eg or rdpo (see drostudy.dpo.trainer)"""
    divergence: str = "tv"
    """ball of the robust loss: tv, kl, chi2 or cvar (used by --loss robust only)"""
    radius: float = 0.0
    """ball size of the robust loss (cvar: tail fraction); 0 is ordinary DPO"""
    beta: float = 0.1
    """DPO coefficient beta (KL strength to the reference)"""
    reg: float = 1.0
    """temperature of the penalised peers: Dr. DPO's beta' (--loss dr_dpo), KLDPO's tau (--loss kldpo)"""
    group_step: float = 0.5
    """exponentiated-gradient step eta of group-robust DPO (--loss group_eg); docs/methods.md gives its scale"""
    label_smoothing: float = 0.1
    """rDPO's assumed label-flip rate epsilon in [0, 0.5) (--loss rdpo)"""
    n_train: int = 128
    """training pairs, split evenly over the train domains"""
    steps: int = 16
    """optimiser steps"""
    batch_size: int = 8
    """pairs per step: the set the worst case is taken over"""
    learning_rate: float = 1e-3
    """AdamW learning rate of the LoRA weights (linear decay)"""
    max_length: int = 96
    """longest prompt + response in tokens; longer pairs are left out (never truncated), in training and test"""
    n_eval: int = 48
    """held-out pairs per domain for preference accuracy, margin and KL; 0 = every held-out pair"""
    n_generate: int = 24
    """held-out prompts per domain for greedy answers"""
    seed: int = 0
    """seed of the training sample, LoRA initialisation and batch order (the test sets do not change)"""
    dataset: str = ""
    """your own training pairs: a JSONL/JSON/parquet file or hub id, columns prompt/chosen/rejected (+ domain)"""
    trl_args: tuple[str, ...] = ()
    """TRL training fields KEY=VALUE,... for RobustDPOConfig (e.g. gradient_accumulation_steps=4)"""

    def __post_init__(self):
        super().__post_init__()
        if self.loss in RENAMED_LOSSES:
            new = RENAMED_LOSSES[self.loss]
            warnings.warn(f"loss {self.loss!r} is deprecated; use {new!r}", FutureWarning, stacklevel=3)
            object.__setattr__(self, "loss", new)
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {list(LOSSES)}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5); got {self.label_smoothing!r}")
        positive = (
            "beta",
            "learning_rate",
            "n_train",
            "steps",
            "batch_size",
            "max_length",
            "n_generate",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        if not self.n_eval >= 0:
            raise ValueError(f"n_eval must be >= 0 (0: every held-out pair); got {self.n_eval!r}")
        from drostudy.dropin.cli import trl_overrides
        from drostudy.dropin.configs import RobustDPOConfig, check_dpo_fields

        # the robust fields and TRL's fields are checked now, before any loading
        check_dpo_fields(**self.robust_fields())
        object.__setattr__(self, "trl_args", tuple(self.trl_args))
        trl_overrides(RobustDPOConfig, self.trl_args)

    @property
    def method(self) -> str:
        """`ordinary` for the ordinary loss or a robust ball that is a point, else the loss's name."""
        if self.loss == "robust":
            return method_label(self.divergence, self.radius)
        return self.loss

    @property
    def setting(self) -> str:
        """This run's name in the results tables (drostudy.config.setting_label): `ordinary`, the ball
        (`tv 0.2`) or the peer (`dr_dpo`, `group_eg`; the fast path's `wdpo`)."""
        if self.method == "robust":
            return setting_label(self.method, self.divergence, self.radius)
        return setting_label(self.method)

    def robust_fields(self) -> dict:
        """The RobustDPOConfig / DPOConfig fields of this run's loss."""
        fields = {
            "ordinary": {},
            "robust": {"divergence": self.divergence, "radius": self.radius},
            "dr_dpo": {"dro_method": "dr_dpo", "reg": self.reg},
            "kldpo": {"dro_method": "kldpo", "reg": self.reg},
            "group_eg": {"dro_method": "group_eg", "group_step": self.group_step},
            "rdpo": {"loss_type": ["robust"], "label_smoothing": self.label_smoothing},
        }[self.loss]
        return {"loss_type": ["sigmoid"], "label_smoothing": 0.0} | fields
