"""Minibatch DRO against the exact robust optimum, on the toy Bradley-Terry model of drostudy.toy.preferences.

`minibatch_robust_gd` runs the minibatch algorithm of Mandal, Sasnauskas and Radanovic (2025) (exact
worst-case weights on each minibatch from drostudy.weights, the gradient of the weighted loss, a decreasing
step size); `gap_curves` records F(theta_t) - F* against iterations for several batch sizes, F* from
drostudy.toy.exact. The minibatch estimator of F is biased (the worst case of a small batch is milder than
that of the full data), so small batches stall at a floor. drostudy.toy.domain_shift compares the exact
robust and ordinary (ERM) optima under a shift of the domain mix inside the ball. Everything is float64,
seeded and takes seconds on a CPU. `make_domains` and `sample_preferences` are re-exported for notebook 01.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from drostudy.progress import tqdm
from drostudy.threads import torch_threads
from drostudy.toy.exact import solve_full_robust
from drostudy.toy.preferences import (  # noqa: F401 (make_domains, sample_preferences: re-exported)
    DEFAULT_L2,
    PreferenceData,
    check_level,
    make_domains,
    robust_objective,
    sample_preferences,
)
from drostudy.weights import group_worst_case_weights, validate_radius, worst_case_weights


def minibatch_robust_gd(
    data: PreferenceData,
    divergence: str,
    radius: float,
    batch_size: int,
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
    n_evals: int = 40,
    progress: bool = False,
    level: str = "example",
    theta0: np.ndarray | None = None,
) -> list[dict]:
    """Minibatch robust gradient descent from `theta0` (default 0); returns the full objective's history.

    Step t: draw `batch_size` pairs without replacement, w = worst_case_weights(l_B, divergence, radius)
    (detached), step along -(sum_i w_i grad l_i + l2 theta) with lr / sqrt(t). The guarantee is for the
    running average of the iterates, so both are evaluated. History rows, at `n_evals` log-spaced steps:
    {"step", "batch_size", "objective": F(theta_t), "avg_objective": F(mean of theta_1..theta_t)}.
    """
    validate_radius(divergence, radius)
    check_level(level)
    n, dim = data.z.shape
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}]; got {batch_size!r}")
    generator = torch.Generator().manual_seed(seed)
    theta = torch.zeros(dim, dtype=torch.float64) if theta0 is None else torch.as_tensor(theta0).double()
    theta_sum = torch.zeros(dim, dtype=torch.float64)
    evals = set(np.unique(np.geomspace(1, steps, n_evals).round().astype(int)).tolist())
    history = []
    with torch_threads(1):  # (B,)-sized tensors: extra threads only add overhead
        for step in tqdm(range(1, steps + 1), disable=not progress, desc=f"batch {batch_size}"):
            batch = torch.randperm(n, generator=generator)[:batch_size]
            z = data.z[batch]  # (B, d)
            margins = z @ theta  # (B,)
            if level == "example":
                weights = worst_case_weights(F.softplus(-margins), divergence, radius)  # (B,)
            else:
                weights = group_worst_case_weights(
                    F.softplus(-margins), data.domain[batch], divergence, radius
                )
            grad = -(weights * torch.sigmoid(-margins)) @ z + l2 * theta  # (d,)
            theta = theta - lr / math.sqrt(step) * grad
            theta_sum += theta
            if step in evals:
                history.append(
                    {
                        "step": step,
                        "batch_size": batch_size,
                        "objective": robust_objective(theta, data, divergence, radius, l2, level),
                        "avg_objective": robust_objective(
                            theta_sum / step, data, divergence, radius, l2, level
                        ),
                    }
                )
    return history


def gap_curves(
    data: PreferenceData,
    divergence: str,
    radius: float,
    batch_sizes: tuple[int, ...],
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> tuple[pd.DataFrame, float]:
    """Histories of `minibatch_robust_gd` for each batch size, with gap = F - F*; and F* itself.

    Every run starts from the ordinary (ERM) optimum, as robust fine-tuning starts from an ordinarily
    trained model (from theta = 0 the TV and CVaR runs would start next to their optimum: at radius 0.2
    both are close to the constant predictor).
    Columns: step, batch_size, objective, avg_objective, gap, avg_gap. Gaps are >= 0 up to the solver's
    tolerance (F* is the exact optimum).
    """
    _, optimum = solve_full_robust(data, divergence, radius, l2)
    theta0, _ = solve_full_robust(data, "tv", 0.0, l2)
    rows = []
    for batch_size in batch_sizes:
        rows += minibatch_robust_gd(
            data, divergence, radius, batch_size, steps, lr, seed, l2, theta0=theta0
        )
    table = pd.DataFrame(rows)
    table["gap"] = table["objective"] - optimum
    table["avg_gap"] = table["avg_objective"] - optimum
    return table, optimum


def batch_size_study(
    data: PreferenceData,
    divergences: tuple[str, ...],
    radius: float,
    batch_sizes: tuple[int, ...],
    steps: int,
    lr: float,
    seed: int = 0,
    l2: float = DEFAULT_L2,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """`gap_curves` for each divergence: one table with a `divergence` column, and F* per divergence."""
    tables, optima = [], {}
    for divergence in divergences:
        table, optima[divergence] = gap_curves(
            data, divergence, radius, batch_sizes, steps, lr, seed, l2
        )
        tables.append(table.assign(divergence=divergence))
    return pd.concat(tables, ignore_index=True), optima


def final_gaps(table: pd.DataFrame) -> dict[str, dict[int, float]]:
    """{divergence: {batch_size: gap of the averaged iterate at the last step}} from `batch_size_study`."""
    last = table[table.step == table.step.max()]
    return {
        divergence: {int(b): float(g) for b, g in zip(part.batch_size, part.avg_gap, strict=True)}
        for divergence, part in last.groupby("divergence")
    }
