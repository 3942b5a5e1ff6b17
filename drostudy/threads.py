"""CPU threads: each of several worker processes gets its share of the cores; a block can run single-threaded.

torch runs its intra-op thread pool (OpenMP, MKL) with as many threads as there are cores. Two such processes
on the same cores spin against each other: on 2 cores, two side-by-side DPO runs took 7 to 9.5 times as long
as one alone, not twice (benchmarks/bench_shared_cores.py measures it). Every place that starts processes
side by side (sweep workers) therefore gives each `cores // workers` threads through the environment, which
torch, OpenMP and MKL read when they start; a single process keeps all cores. A user who set any of these
variables keeps them: `OMP_NUM_THREADS=1 make study` runs the study on one thread beside other work.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# Numerics that depend on neither the thread count nor the CPU's vector width, for the study's processes on
# x86: MKL's strict conditional numerical reproducibility on its AVX2 code path, ATen's and oneDNN's kernels
# held to AVX2 as well. Without them a DPO run at 1 and at 2 threads differs from the 7th digit on (the
# order of a matrix product's partial sums follows the threads); with them the two are bitwise equal
# (tests/test_determinism.py). They cost about a third more time on the DPO fast path
# (benchmarks/bench_numerics.py). Read when a process starts, so they are set for the processes it starts.
REPRODUCIBLE_NUMERICS = {
    "MKL_CBWR": "AVX2,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a container's or taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def thread_share(workers: int, cores: int | None = None) -> int:
    """Threads per process when `workers` processes share `cores` (default: available_cores()): at least 1."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    return max(1, (cores if cores is not None else available_cores()) // workers)


def worker_thread_env(workers: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment variables for each of `workers` processes started side by side: their share of the cores.

    Empty for a single worker (it keeps all cores) and when `environ` (default: os.environ) already sets
    any of THREAD_VARIABLES: the user's choice wins.
    """
    environ = os.environ if environ is None else environ
    share = thread_share(workers)
    if workers == 1 or any(name in environ for name in THREAD_VARIABLES):
        return {}
    return dict.fromkeys(THREAD_VARIABLES, str(share))


def numerics_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """REPRODUCIBLE_NUMERICS for a process started on this machine (x86 only: elsewhere they mean nothing),
    without the variables `environ` (default: os.environ) already sets: the user's choice wins."""
    import platform

    environ = os.environ if environ is None else environ
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    return {k: v for k, v in REPRODUCIBLE_NUMERICS.items() if k not in environ}


def describe_threads(workers: int, environ: Mapping[str, str] | None = None) -> str:
    """One line for a console: how many threads each of `workers` processes runs, and why."""
    environ = os.environ if environ is None else environ
    user = {k: environ[k] for k in THREAD_VARIABLES if k in environ}
    if user:
        return f"threads per process: as set ({', '.join(f'{k}={v}' for k, v in user.items())})"
    share = thread_share(workers)
    scope = "all" if workers == 1 else f"its share of the {available_cores()}"
    return f"threads per process: {share} ({scope} cores; set OMP_NUM_THREADS to override)"


@contextlib.contextmanager
def torch_threads(count: int | None):
    """torch intra-op threads = `count` inside the block, restored after (None: leave them as they are).

    For work on small tensors, where threads cost more than they save and contend on a shared CPU.
    """
    import torch

    previous = torch.get_num_threads()
    switch = count is not None and count != previous
    if switch:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if switch:
            torch.set_num_threads(previous)
