"""`python -m drostudy rl --trainer grpo ...`: the `rl` run of drostudy.rl.run on TRL's GRPO.

Everything but the trainer is the RLOO run's (data, LoRA policy, learned reward, evaluation, metrics.json):
`GRPORunConfig` is `RLConfig` plus `trainer="grpo"`, whose `trl_classes` name RobustGRPOConfig and
RobustGRPOTrainer (drostudy.rl.grpo). `beta` becomes GRPO's per-token KL coefficient in the loss, and
`--trl-args` is checked against RobustGRPOConfig (e.g. `loss_type=grpo,steps_per_generation=2`). The
`trainer` field keeps a GRPO run's metrics.json apart from an RLOO run's of the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from drostudy.rl import run
from drostudy.runs import training_command


@dataclass(frozen=True)
class GRPORunConfig(run.RLConfig):
    trainer: str = "grpo"
    """TRL trainer of the run: grpo only (RLConfig is the rloo run)"""

    def __post_init__(self):
        if self.trainer != "grpo":
            raise ValueError(f"GRPORunConfig trains with trainer='grpo'; got {self.trainer!r}")
        super().__post_init__()

    def trl_classes(self) -> tuple[type, type]:
        from drostudy.dropin.grpo_config import RobustGRPOConfig
        from drostudy.rl.grpo import RobustGRPOTrainer

        return RobustGRPOConfig, RobustGRPOTrainer


add_cli_arguments, cli_main = training_command(
    GRPORunConfig, lambda config, **kw: run.train_rl(config, **kw)
)
