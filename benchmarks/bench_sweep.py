"""Time of the default sweep (`make sweep`): run its first N grid points, extrapolate to the whole grid.

    python benchmarks/bench_sweep.py              # one grid point (a few minutes), the estimate for all
    python benchmarks/bench_sweep.py --limit 10   # the whole default grid: the time itself

Runs `python -m drostudy sweep --grid default --limit N` into a temporary runs folder (never runs/), then
reads each run's done.json: wall seconds (process, kernel start, cells) and the cells' own seconds. The
estimate for the whole grid is the mean wall time per run times the grid size over the workers; on a
machine shared with other work it is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drostudy.runner.grid import expand_grid
from drostudy.runner.sweep import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=1, help="grid points to run (default 1)")
    parser.add_argument(
        "--workers", type=int, default=1, help="runs at a time (default 1, as make sweep)"
    )
    args = parser.parse_args()
    size = len(expand_grid(PRESETS["default"]["grid"]))
    with tempfile.TemporaryDirectory() as runs:
        start = time.perf_counter()
        argv = ["--grid", "default", "--limit", str(args.limit), "--workers", str(args.workers)]
        subprocess.run(
            [sys.executable, "-m", "drostudy", "sweep", *argv, "--runs-dir", runs], check=True
        )
        total = time.perf_counter() - start
        done = [json.loads(p.read_text()) for p in Path(runs).glob("default/*/done.json")]
    wall = sum(d["wall_s"] for d in done) / len(done)
    cells = sum(d["run_s"] for d in done) / len(done)
    estimate = wall * size / args.workers
    print(
        json.dumps(
            {
                "runs": len(done),
                "grid_size": size,
                "wall_s_per_run": round(wall, 1),
                "cells_s_per_run": round(cells, 1),
                "command_s": round(total, 1),
                "estimated_sweep_min": round(estimate / 60, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
