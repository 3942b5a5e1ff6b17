"""Notebook 01's plan: the sizes of its convergence experiment per mode (drostudy.config.pick_sizes).

The default sizes make the convergence experiment take about a minute on a laptop CPU: 2048 pairs are the
full data over which cvxpy finds the robust optimum F*, and four batch sizes from 16 to 1024 show the floor
each leaves above it. SMOKE (the test suite) runs one divergence on 256 pairs for 60 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from drostudy.config import pick_sizes


@dataclass(frozen=True)
class Sizes:
    """The convergence experiment of notebook 01."""

    n_pairs: int = 2048
    """pairs of the full data: the robust optimum F* is taken over all of them"""
    steps: int = 2000
    """minibatch steps per batch size"""
    batch_sizes: tuple[int, ...] = (16, 64, 256, 1024)
    """the minibatch sizes compared"""
    learning_rate: float = 0.5
    """initial step; the step at t is learning_rate / sqrt(t)"""
    every_divergence: bool = True
    """run the experiment for every divergence (False: only the notebook's DIVERGENCE)"""


PRESETS = {
    "default": Sizes(),
    "smoke": Sizes(n_pairs=256, steps=60, batch_sizes=(8, 64), every_divergence=False),
}


def pick(smoke: bool, **overrides) -> Sizes:
    """The sizes of the mode, with every override that is not None (batch_sizes may be "8,64")."""
    return pick_sizes(PRESETS, smoke, **overrides)
