"""TRL configs that also name the robust objective: `RobustDPOConfig`, `RobustRewardConfig`, `RobustRLOOConfig`.

Each is the TRL config with a few more fields, so `HfArgumentParser` shows them (`--divergence kl --radius
0.5`), `training_args.bin` stores them, and the trainers write them beside a saved model
(`drostudy_robust.json`). One vocabulary with the rest of drostudy: `divergence` and `radius` are the ball
of drostudy.weights (for cvar the radius is the tail fraction alpha), `reg` a temperature, `beta` stays
TRL's DPO beta. DRO is off by default (radius 0): every Robust* trainer then is its TRL trainer.

| dro_method    | objective on the per-example losses l_i of one optimizer batch | its parameters           |
|---------------|----------------------------------------------------------------|--------------------------|
| `worst_case`  | sum_i w*_i l_i, w* worst case in the divergence ball (default)  | divergence, radius, level|
| `dr_dpo`      | Dr. DPO: -reg log mean exp(-l / reg)  (DPO only)                | reg (beta')              |
| `kldpo`       | KLDPO: mean(min(exp((l - mean l) / reg), 10) * l)  (DPO only)   | reg (tau)                |
| `group_eg`    | group-robust DPO, group weights q by exponentiated gradient     | group_step (eta)         |

TRL's `loss_type="robust"` is rDPO (label-flip correction, not DRO); it composes with any dro_method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trl import DPOConfig, RewardConfig, RLOOConfig

from drostudy.weights import (
    DIVERGENCES,
    LEVELS,
    ball_is_point,
    validate_outlier_fraction,
    validate_radius,
)

DRO_METHODS = ("worst_case", "dr_dpo", "kldpo", "group_eg")
DRO_BATCHES = ("optimizer", "micro")
SETTINGS_FILE = "drostudy_robust.json"


def _help(default, text: str):
    return field(default=default, metadata={"help": text})


@dataclass
class _BallFields:
    """The divergence ball shared by the three configs."""

    divergence: str | None = _help(
        None, f"ambiguity set of the worst case: one of {list(DIVERGENCES)} (None: DRO off)"
    )
    radius: float = _help(0.0, "ball size rho (cvar: tail fraction alpha, 1 = ordinary); 0 = DRO off")

    def uses_dro(self) -> bool:
        """Whether the trainer computes the loss itself (and logs dro/*); False: TRL's own loss, untouched."""
        return self.divergence is not None

    def is_robust(self) -> bool:
        """Whether the objective differs from the plain TRL trainer's."""
        return self.divergence is not None and not ball_is_point(self.divergence, self.radius)

    def _check_ball(self) -> None:
        self.radius = checked_radius(self.divergence, self.radius)

    def robust_settings(self) -> dict:
        """The drostudy fields of this config (what `drostudy_robust.json` records)."""
        names = [f.name for f in dataclasses.fields(self) if f.name in _ROBUST_FIELD_NAMES]
        return {"config": type(self).__name__, **{n: getattr(self, n) for n in names}}


@dataclass
class _BatchFields(_BallFields):
    """Fields of the trainers whose loss is a mean of per-example losses (DPO, reward)."""

    level: str = _help("example", f"worst case over examples or over groups: one of {list(LEVELS)}")
    group_column: str = _help(
        "group", "dataset column of each example's group (domain): integer ids or names"
    )
    dro_batch: str = _help(
        "optimizer",
        "weights over the optimizer batch (micro-batches x accumulation x processes) or each micro-batch",
    )

    def _check_batch(self) -> None:
        check_batch(self.level, self.dro_batch, self.group_column, self.uses_dro())


def checked_radius(divergence: str | None, radius: float) -> float:
    """`radius` checked for `divergence` and as a float; without a divergence (DRO off) only radius 0."""
    if divergence is None:
        if radius != 0.0:
            raise ValueError(f"radius={radius!r} needs a divergence: one of {list(DIVERGENCES)}")
        return radius
    return validate_radius(divergence, radius)


def check_batch(level: str, dro_batch: str, group_column: str, uses_dro: bool) -> None:
    """The checks of the batch fields (`uses_dro`: whether the trainer computes the loss itself)."""
    _check_choice("level", level, LEVELS)
    _check_choice("dro_batch", dro_batch, DRO_BATCHES)
    if level == "group" and not uses_dro:
        raise ValueError(f"level='group' needs a divergence: one of {list(DIVERGENCES)}")
    if not isinstance(group_column, str) or not group_column:
        raise ValueError(f"group_column must be a column name; got {group_column!r}")


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")


@dataclass
class RobustRewardConfig(RewardConfig, _BatchFields):
    """TRL's RewardConfig plus the worst case of the Bradley-Terry losses over a divergence ball."""

    outlier_fraction: float = _help(
        0.0, "DORO: drop this fraction of the batch's largest losses before the worst case; [0, 1)"
    )

    def __post_init__(self):
        super().__post_init__()
        self._check_ball()
        self._check_batch()
        self.outlier_fraction = validate_outlier_fraction(self.outlier_fraction)
        if self.outlier_fraction > 0 and (not self.uses_dro() or self.level != "example"):
            raise ValueError(
                "outlier_fraction > 0 (DORO) needs a divergence and level='example'; got "
                f"divergence={self.divergence!r}, level={self.level!r}"
            )

    def needs_groups(self) -> bool:
        """Whether every batch must carry the group column."""
        return self.level == "group"


@dataclass
class RobustDPOConfig(DPOConfig, _BatchFields):
    """TRL's DPOConfig plus a robust objective over the per-pair losses (module table)."""

    dro_method: str = _help("worst_case", f"robust objective: one of {list(DRO_METHODS)}")
    reg: float | None = _help(None, "temperature of dr_dpo (beta') or kldpo (tau); > 0")
    group_step: float | None = _help(None, "exponentiated-gradient step eta of group_eg; > 0")

    def __post_init__(self):
        super().__post_init__()
        names = [f.name for f in dataclasses.fields(self) if f.name in _ROBUST_FIELD_NAMES]
        self.radius = check_dpo_fields(**{name: getattr(self, name) for name in names})

    def uses_dro(self) -> bool:
        return self.dro_method != "worst_case" or super().uses_dro()

    def is_robust(self) -> bool:
        return self.dro_method != "worst_case" or super().is_robust()

    def needs_groups(self) -> bool:
        """Whether every batch must carry the group column."""
        return self.dro_method == "group_eg" or self.level == "group"


def check_dpo_fields(**fields) -> float:
    """Raise ValueError where RobustDPOConfig(**fields) would for its drostudy fields (TRL's fields are
    ignored; a missing one takes its default); return the radius as checked. RobustDPOConfig runs these
    checks too; called alone they need no TRL TrainingArguments, whose construction resets accelerate's
    process-wide state under a live trainer."""
    given = {
        f.name: fields.get(f.name, f.default)
        for f in dataclasses.fields(RobustDPOConfig)
        if f.name in _ROBUST_FIELD_NAMES
    }
    method, divergence, level = given["dro_method"], given["divergence"], given["level"]
    _check_choice("dro_method", method, DRO_METHODS)
    radius = checked_radius(divergence, given["radius"])
    uses_dro = method != "worst_case" or divergence is not None
    check_batch(level, given["dro_batch"], given["group_column"], uses_dro)
    if method != "worst_case" and (divergence is not None or radius != 0.0):
        raise ValueError(
            f"divergence and radius belong to dro_method='worst_case'; dro_method={method!r} does "
            "not use them (leave them unset)"
        )
    if method != "worst_case" and level != "example":
        raise ValueError(f"level belongs to dro_method='worst_case'; got {method!r}")
    _check_parameter("reg", given["reg"], method in ("dr_dpo", "kldpo"), method)
    _check_parameter("group_step", given["group_step"], method == "group_eg", method)
    return radius


def _check_parameter(name: str, value, used: bool, method: str) -> None:
    """A peer's parameter is required by its method and refused by the others (never silently ignored)."""
    if used and (value is None or not value > 0):
        raise ValueError(f"dro_method={method!r} needs {name} > 0; got {value!r}")
    if not used and value is not None:
        raise ValueError(f"{name} is not used by dro_method={method!r}; leave it unset")


@dataclass
class RobustRLOOConfig(RLOOConfig, _BallFields):
    """TRL's RLOOConfig plus the worst case over prompts of the KL-penalised value (one generation batch)."""

    def __post_init__(self):
        super().__post_init__()
        self._check_ball()


_ROBUST_FIELD_NAMES = (
    "divergence",
    "outlier_fraction",
    "radius",
    "level",
    "group_column",
    "dro_batch",
    "dro_method",
    "reg",
    "group_step",
)


def check_config(args, expected: type, trainer: str) -> None:
    """The trainers' guard: `args` must be an instance of `expected` (not a dict, not missing, not plain TRL)."""
    if not isinstance(args, expected):
        what = "missing" if args is None else f"a {type(args).__name__}"
        raise ValueError(
            f"{trainer} needs args={expected.__name__}(...) (TRL's config plus divergence/radius); "
            f"got {what}"
        )
