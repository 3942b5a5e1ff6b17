"""The offline multi-domain preference suite, built from real `evals` prompts (see README.md, the card).

from drostudy.data import load_suite, select, describe
suite = load_suite()                                    # DatasetDict: train / test
mix = select(suite["train"], proportions={"math": 0.5, "code": 0.5}, n=1000)
ood = select(suite["test"], domains=["reasoning", "knowledge", "safety"])
"""

from drostudy.data.build import COLUMNS, DOMAINS, KIND_MIX, BuildConfig
from drostudy.data.responses import KINDS
from drostudy.data.suite import describe, load_suite, select, validate_rows

__all__ = [
    "COLUMNS",
    "DOMAINS",
    "KINDS",
    "KIND_MIX",
    "BuildConfig",
    "describe",
    "load_suite",
    "select",
    "validate_rows",
]
