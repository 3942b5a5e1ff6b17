"""drostudy: distributionally robust RLHF, exact worst-case weights and robust losses on TRL."""

__version__ = "0.1.0"
