"""drostudy: distributionally robust RLHF, exact worst-case weights and robust losses on TRL.

The core is importable without TRL: `drostudy.worst_case_weights` and the losses in `drostudy.losses`.
"""

from drostudy.weights import (
    DIVERGENCES,
    group_worst_case_weights,
    penalised_weights,
    robust_value,
    worst_case_weights,
)

__version__ = "0.1.0"
__all__ = [
    "DIVERGENCES",
    "group_worst_case_weights",
    "penalised_weights",
    "robust_value",
    "worst_case_weights",
]
