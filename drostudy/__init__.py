"""drostudy: distributionally robust RLHF, exact worst-case weights and robust losses on TRL.

The core is importable without TRL: `drostudy.worst_case_weights` and the losses in `drostudy.losses`.
The TRL drop-ins (`RobustDPOTrainer` + `RobustDPOConfig`, `RobustRewardTrainer` + `RobustRewardConfig`,
`RobustRLOOTrainer` + `RobustRLOOConfig`, `RobustGRPOTrainer` + `RobustGRPOConfig`) are imported on first
use, so `import drostudy` stays fast.
"""

import importlib

from drostudy.weights import (
    DIVERGENCES,
    group_worst_case_weights,
    penalised_weights,
    robust_value,
    worst_case_weights,
)

__version__ = "0.1.0"
# name -> module, imported on first attribute access (module __getattr__, PEP 562)
_LAZY = {
    "RobustDPOConfig": "drostudy.dropin.configs",
    "RobustRewardConfig": "drostudy.dropin.configs",
    "RobustRLOOConfig": "drostudy.dropin.configs",
    "RobustGRPOConfig": "drostudy.dropin.grpo_config",
    "RobustDPOTrainer": "drostudy.dpo.trainer",
    "RobustRewardTrainer": "drostudy.reward.trainer",
    "RobustRLOOTrainer": "drostudy.rl.trainer",
    "RobustGRPOTrainer": "drostudy.rl.grpo",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drostudy' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "DIVERGENCES",
    "group_worst_case_weights",
    "penalised_weights",
    "robust_value",
    "worst_case_weights",
]
