"""Two training runs side by side on the same cores, with and without each getting its share of the threads.

    python benchmarks/bench_shared_cores.py                     # short SmolLM2-135M DPO runs (~30 s alone)
    python benchmarks/bench_shared_cores.py --steps 1 --policy tiny-llama   # seconds, a quick check

The same short `python -m drostudy dpo` run (each into a fresh folder, so nothing resumes) is timed
(1) alone, with torch's default threads (all cores); (2) twice side by side, both with the default
threads: the oversubscription a sweep with --workers 2, or a study beside other work, had; (3) twice side
by side with drostudy.threads.worker_thread_env(2): what the sweep now gives its workers. Thread variables
of this shell (OMP_NUM_THREADS, ...) are removed first, so (1) and (2) see the defaults. Printed: the wall
time of each process, and each pair's slowest process over the run alone; with the share the pair should
take about cores-bound 2x (two runs' work on the same cores), without it it took far longer (issue: 7-9.5x
for 03's DPO runs on 2 cores). Timings on a machine shared with other work are noise, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drostudy.threads import THREAD_VARIABLES, available_cores, worker_thread_env


def dpo_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The short DPO run every process does."""
    return [
        sys.executable,
        "-m",
        "drostudy",
        "dpo",
        f"--policy={args.policy}",
        f"--steps={args.steps}",
        "--batch-size=4",
        "--n-train=16",
        "--n-eval=4",
        "--n-generate=1",
        "--max-new-tokens=4",
        "--eval-domains=reasoning",
        f"--out={out}",
    ]


def run_side_by_side(args: argparse.Namespace, count: int, env: dict, root: Path) -> list[float]:
    """Start `count` runs at once; the wall seconds of each, from the common start to its exit."""
    root.mkdir(parents=True)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            dpo_argv(args, root / f"run{i}"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    walls = []
    for proc in procs:
        _, err = proc.communicate()
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"a benchmark run failed:\n{err[-3000:]}")
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=3, help="DPO steps per run")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    shared = {**base, **worker_thread_env(2, base)}
    with tempfile.TemporaryDirectory() as tmp:
        run_side_by_side(args, 1, base, Path(tmp) / "warm")  # page cache, converted checkpoint
        alone = run_side_by_side(args, 1, base, Path(tmp) / "alone")[0]
        unshared = run_side_by_side(args, 2, base, Path(tmp) / "unshared")
        with_share = run_side_by_side(args, 2, shared, Path(tmp) / "shared")
    result = {
        "cores": available_cores(),
        "policy": args.policy,
        "steps": args.steps,
        "threads_with_share": shared.get("OMP_NUM_THREADS", "default"),
        "alone_s": round(alone, 1),
        "pair_default_threads_s": [round(w, 1) for w in unshared],
        "pair_with_share_s": [round(w, 1) for w in with_share],
        "ratio_default_threads": round(max(unshared) / alone, 2),
        "ratio_with_share": round(max(with_share) / alone, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
