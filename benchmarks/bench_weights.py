"""Time drostudy.weights.worst_case_weights against cvxpy (CLARABEL) and the `dro` package (v0.4.3).

    .venv/bin/python benchmarks/bench_weights.py            # full table, n = 64 .. 65,536
    .venv/bin/python benchmarks/bench_weights.py --quick    # n <= 4096, fewer repetitions

Fairness: each method gets the same float64 CPU losses; repetitions are interleaved (one call of every
method per round, so machine load hits all alike) and the median is reported. cvxpy gets its strongest
form: the problem is built and compiled ONCE with the losses as a Parameter, and only `solve` is timed
(a fresh problem per minibatch is slower still). cvxpy is skipped above n = 16,384 (seconds per solve).
`dro` is imported from its file (its package __init__ needs matplotlib, which the study does not
install); its exact routine is the CVaR `_hard_cvar` (sort + top-k); its chi2 routine is a bisection with
tolerance 1e-2 on the divergence, so it is approximate: its column shows speed, and `dro chi2 gap` shows
how far its value falls short of the exact optimum.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch

from drostudy import weights
from drostudy.weights import DIVERGENCES, worst_case_weights

RADIUS = {"tv": 0.2, "kl": 0.3, "chi2": 0.3, "cvar": 0.1}  # interior of every ball at all n
CVXPY_MAX_N = 16_384


def load_dro_fdro_utils():
    spec = importlib.util.find_spec("dro")
    path = Path(spec.submodule_search_locations[0]) / "neural_model" / "fdro_utils.py"
    module_spec = importlib.util.spec_from_file_location("dro_fdro_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def cvxpy_solver(n: int, divergence: str, radius: float):
    """A compiled problem; returns a function losses -> optimal value."""
    losses = cp.Parameter(n)
    q = cp.Variable(n, nonneg=True)
    u = np.full(n, 1.0 / n)
    ball = {
        "tv": lambda: 0.5 * cp.norm1(q - u) <= radius,
        "kl": lambda: cp.sum(cp.rel_entr(q, u)) <= radius,
        "chi2": lambda: cp.norm(np.sqrt(n) * (q - u)) <= np.sqrt(2 * radius),
        "cvar": lambda: q <= u / radius,
    }[divergence]()
    problem = cp.Problem(cp.Maximize(q @ losses), [cp.sum(q) == 1, ball])

    def solve(values: np.ndarray) -> float:
        losses.value = values
        return problem.solve(solver=cp.CLARABEL)

    return solve


def median_ms(calls: dict, repeats: int) -> dict:
    """Interleaved repetitions: each round calls every method once, in a rotating order.

    `calls` maps a name to a function, or to (setup, function) where the untimed setup sets threads.
    """
    calls = {name: c if isinstance(c, tuple) else (lambda: None, c) for name, c in calls.items()}
    times = {name: [] for name in calls}
    names = list(calls)
    for round_index in range(-1, repeats):  # round -1 is the warm-up
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            setup, call = calls[name]
            setup()
            start = time.perf_counter()
            call()
            if round_index >= 0:
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def threads(count: int, solver_threads: int | None):
    def setup():
        torch.set_num_threads(count)
        weights.SOLVER_THREADS = solver_threads

    return setup


def measure(values: np.ndarray, divergence: str, repeats: int, dro_losses: dict) -> dict:
    """One table row: our times at 1 and 2 threads, dro's where it has the divergence, cvxpy's."""
    n, radius = len(values), RADIUS[divergence]
    losses = torch.tensor(values)
    row = {"n": n, "divergence": divergence}
    calls = {"ours": lambda: worst_case_weights(losses, divergence, radius)}
    if divergence in dro_losses:
        calls["dro"] = lambda: dro_losses[divergence]._compute_optimal_weights(losses)
    # ours_1t / ours_2t: the solve itself at 1 and 2 torch threads (the library's thread switch off);
    # ours_lib: the library default (SOLVER_THREADS = 1) called from a 2-thread process. The 1-thread
    # block runs apart from the 2-thread one: idle OpenMP workers of a 2-thread call keep spinning for a
    # while and would slow whatever is timed next on this 2-core machine.
    block_1t = {f"{name}_1t": (threads(1, None), call) for name, call in calls.items()}
    block_2t = {f"{name}_2t": (threads(2, None), call) for name, call in calls.items()}
    block_2t["ours_lib"] = (threads(2, 1), calls["ours"])
    row.update(median_ms(block_1t, repeats))
    row.update(median_ms(block_2t, repeats))
    threads(1, 1)()
    exact = float(worst_case_weights(losses, divergence, radius) @ losses)
    if divergence == "chi2":
        row["dro_gap"] = exact - float(calls["dro"]() @ losses)
    if n <= CVXPY_MAX_N:
        solve = cvxpy_solver(n, divergence, radius)
        try:
            row["cvxpy_gap"] = exact - solve(values)  # also the warm-up
            cvxpy_repeats = 3 if n > 4096 else 5
            row["cvxpy"] = median_ms({"cvxpy": lambda: solve(values)}, cvxpy_repeats)["cvxpy"]
        except cp.error.SolverError:
            row["cvxpy_failed"] = True  # CLARABEL gives up on some large exponential-cone problems
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n <= 4096 and fewer repetitions")
    args = parser.parse_args()
    sizes = [64, 256, 1024, 4096] if args.quick else [64, 256, 1024, 4096, 16_384, 65_536]
    dro = load_dro_fdro_utils()
    dro_losses = {
        "cvar": dro.RobustLoss(RADIUS["cvar"], 0.0, "cvar"),
        "chi2": dro.RobustLoss(RADIUS["chi2"], 0.0, "chi-square"),
    }
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        values = rng.normal(size=n)
        repeats = (5 if args.quick else 21) if n <= 4096 else 7
        for divergence in DIVERGENCES:
            rows.append(measure(values, divergence, repeats, dro_losses))
            print_row(rows[-1])
    print_summary(rows)


HEADER = (
    f"{'n':>6} {'div':>5} {'ours 1t':>9} {'ours 2t':>9} {'ours lib':>9} {'cvxpy':>9} {'dro 1t':>9} {'dro 2t':>9}"
    f" {'cvxpy/ours':>10} {'dro/ours':>8} {'2t/1t':>6} {'cvxpy gap':>10} {'dro gap':>9}"
)


def print_row(row: dict) -> None:
    if row["n"] == 64 and row["divergence"] == DIVERGENCES[0]:
        print(
            "times: median ms per call at torch 1 and 2 threads; 'ours lib' = library default (solve at 1"
        )
        print("thread) called from a 2-thread process; ratios vs ours at 1 thread;")
        print("gaps: exact value minus the other method's value (positive = it found less)")
        print(HEADER)

    def fmt(key, width=9, spec=".3f"):
        return f"{row[key]:>{width}{spec}}" if key in row else f"{'-':>{width}}"

    ours = row["ours_1t"]
    cvxpy_ratio = f"{row['cvxpy'] / ours:>10.0f}" if "cvxpy" in row else f"{'skipped':>10}"
    if row.get("cvxpy_failed"):
        cvxpy_ratio = f"{'failed':>10}"
    dro_ratio = f"{row['dro_1t'] / ours:>8.2f}" if "dro_1t" in row else f"{'-':>8}"
    print(
        f"{row['n']:>6} {row['divergence']:>5} {fmt('ours_1t')} {fmt('ours_2t')} {fmt('ours_lib')} {fmt('cvxpy')}"
        f" {fmt('dro_1t')} {fmt('dro_2t')} {cvxpy_ratio} {dro_ratio} {row['ours_2t'] / ours:>6.2f}"
        f" {fmt('cvxpy_gap', 10, '.1e')} {fmt('dro_gap', 9, '.1e')}",
        flush=True,
    )


def print_summary(rows: list[dict]) -> None:
    print(f"\ncvxpy skipped above n = {CVXPY_MAX_N} (seconds per solve).")
    for r in rows:
        if r["n"] == 4096:
            ratio = f"{r['cvxpy'] / r['ours_1t']:.0f}x" if "cvxpy" in r else "solver failed"
            print(f"n=4096 {r['divergence']:>5}: cvxpy/ours = {ratio}")
    for r in rows:
        if "dro_1t" in r:
            name = "_hard_cvar (exact)" if r["divergence"] == "cvar" else "chi2 bisection (approximate)"
            print(f"n={r['n']:>6} dro {name} / ours = {r['dro_1t'] / r['ours_1t']:.2f}")
    ratios = [r["ours_2t"] / r["ours_1t"] for r in rows]
    print(
        f"ours 2 threads / 1 thread: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.1f}"
    )
    lib = [r["ours_lib"] / r["ours_1t"] for r in rows]
    print(
        f"library default (from 2 threads) / 1 thread: median {statistics.median(lib):.2f}, max {max(lib):.2f}"
    )


if __name__ == "__main__":
    main()
