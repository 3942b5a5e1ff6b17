"""`RobustGRPOConfig`: TRL's GRPOConfig plus the robust objective over the prompts of a generation batch.

The same vocabulary as drostudy.dropin.configs: `divergence` and `radius` are the ball of drostudy.weights
(cvar: the radius is the tail fraction alpha), DRO is off by default (divergence None, radius 0: the trainer
is TRL's GRPOTrainer). The worst case is over prompts, or over groups of prompts:

| level        | what is weighted                                   | weights from                              |
|--------------|----------------------------------------------------|-------------------------------------------|
| `example`    | each prompt of the generation batch                | the ball (divergence, radius)             |
| `group`      | groups given by the dataset column `group_column`  | the ball around the group shares, or EG   |
| `difficulty` | `difficulty_bins` equal-width bins of each prompt's | the ball, or EG (Prompt-GDRO)             |
|              | online pass rate (reward > `pass_threshold`)        |                                           |

EG is the exponentiated-gradient group update of drostudy.losses (`group_step` eta > 0), used *instead of*
a ball: set `group_step` and leave `divergence` unset. Every combination that would be ignored is a
ValueError here, naming the argument and its allowed values.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from trl import GRPOConfig

from drostudy.dropin.configs import _ROBUST_FIELD_NAMES, _BallFields, _check_choice, _help
from drostudy.weights import DIVERGENCES

GRPO_LEVELS = ("example", "group", "difficulty")
GRPO_DRO_BATCHES = ("generation",)  # GRPO trains several steps on one generation: that batch is the unit
# TRL 1.16's loss types; each is positively homogeneous in every completion's advantage (drostudy.rl.grpo),
# so a per-prompt factor on the advantages weights that prompt's share of the loss. A type not listed here
# (a newer TRL) is refused while DRO is on, until it is checked the same way.
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
GRPO_FIELD_NAMES = (*_ROBUST_FIELD_NAMES, "difficulty_bins", "pass_threshold")


@dataclass
class _GRPOFields(_BallFields):
    """The drostudy fields of RobustGRPOConfig (module table)."""

    level: str = _help(
        "example", f"worst case over prompts or groups of prompts: one of {list(GRPO_LEVELS)}"
    )
    group_column: str = _help(
        "group", "level='group': dataset column of each prompt's group (ids or names)"
    )
    dro_batch: str = _help(
        "generation", f"the batch the weights are over: one of {list(GRPO_DRO_BATCHES)} (all processes)"
    )
    group_step: float | None = _help(
        None,
        "exponentiated-gradient step eta over the groups (level group/difficulty) instead of a ball; > 0",
    )
    difficulty_bins: int | None = _help(
        None, "level='difficulty': equal-width bins of the pass rate; >= 2"
    )
    pass_threshold: float | None = _help(
        None, "level='difficulty': a completion passes when its reward > this (None: 0)"
    )

    def uses_dro(self) -> bool:
        return self.group_step is not None or super().uses_dro()

    def is_robust(self) -> bool:
        return self.group_step is not None or super().is_robust()

    def needs_groups(self) -> bool:
        """Whether every prompt must carry the group column."""
        return self.level == "group"

    def threshold(self) -> float:
        """The pass threshold in use (level='difficulty')."""
        return 0.0 if self.pass_threshold is None else self.pass_threshold

    def check_robust_fields(self) -> None:
        """The checks of the drostudy fields (ValueError naming the argument and its allowed values)."""
        _check_choice("level", self.level, GRPO_LEVELS)
        _check_choice("dro_batch", self.dro_batch, GRPO_DRO_BATCHES)
        self._check_ball()
        if not isinstance(self.group_column, str) or not self.group_column:
            raise ValueError(f"group_column must be a column name; got {self.group_column!r}")
        if self.group_step is not None:
            if not _real(self.group_step) or not self.group_step > 0:
                raise ValueError(f"group_step must be > 0; got {self.group_step!r}")
            if self.level == "example":
                raise ValueError(
                    "group_step (EG over groups) needs level 'group' or 'difficulty'; got 'example'"
                )
            if self.divergence is not None:
                raise ValueError(
                    "group_step replaces the ball: set either group_step or divergence/radius, not both"
                )
        elif self.level != "example" and self.divergence is None:
            raise ValueError(
                f"level={self.level!r} needs a divergence (one of {list(DIVERGENCES)}) or group_step > 0"
            )
        self._check_difficulty()
        loss_type = getattr(self, "loss_type", None)
        if self.uses_dro() and loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(
                f"loss_type {loss_type!r} is not checked to compose with per-prompt advantage weights; "
                f"expected one of {list(GRPO_LOSS_TYPES)}"
            )

    def _check_difficulty(self) -> None:
        if self.level != "difficulty":
            for name in ("difficulty_bins", "pass_threshold"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} belongs to level='difficulty'; got level={self.level!r}")
            return
        bins = self.difficulty_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"level='difficulty' needs difficulty_bins, an integer >= 2; got {bins!r}")
        if self.pass_threshold is not None and not (
            _real(self.pass_threshold) and math.isfinite(self.pass_threshold)
        ):
            raise ValueError(f"pass_threshold must be a finite number; got {self.pass_threshold!r}")

    def robust_settings(self) -> dict:
        """The drostudy fields of this config (what `drostudy_robust.json` records)."""
        return {
            "config": type(self).__name__,
            **{n: getattr(self, n) for n in GRPO_FIELD_NAMES if hasattr(self, n)},
        }


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass
class RobustGRPOConfig(GRPOConfig, _GRPOFields):
    """TRL's GRPOConfig plus the worst case over the prompts (or groups) of one generation batch."""

    def __post_init__(self):
        super().__post_init__()
        self.check_robust_fields()
