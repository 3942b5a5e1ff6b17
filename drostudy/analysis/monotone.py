"""Monotone curves for the matched comparison (drostudy.analysis.matched): the isotonic least-squares fit of a
sequence, and the inversion of a piecewise-linear monotone curve at a value (never extrapolated)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def isotonic(y: Iterable[float], increasing: bool = True) -> np.ndarray:
    """Least-squares monotone fit of `y` (in its order) by pool-adjacent-violators, equal weights."""
    values = np.asarray(list(y), dtype=float) * (1.0 if increasing else -1.0)
    blocks: list[list[float]] = []  # [mean, size]
    for v in values:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    fit = np.concatenate([np.full(int(n), m) for m, n in blocks])
    return fit * (1.0 if increasing else -1.0)


def invert(knob: np.ndarray, fit: np.ndarray, x: float, tol: float) -> float:
    """The middle of {k : fit(k) = x (up to tol)} along the piecewise-linear monotone curve; NaN if x is
    out of its range."""
    if fit[-1] < fit[0]:
        fit, x = -fit, -x
    if not fit[0] - tol <= x <= fit[-1] + tol:
        return math.nan
    lo, hi = int(np.searchsorted(fit, x - tol, "left")), int(np.searchsorted(fit, x + tol, "right")) - 1
    if lo <= hi:  # knob points whose fit is x (a flat stretch when several)
        return float((knob[lo] + knob[hi]) / 2)
    return float(np.interp(x, fit[hi : lo + 1], knob[hi : lo + 1]))  # fit[hi] < x < fit[lo], hi = lo - 1
