"""`python -m drostudy sweep`: a notebook or a training command over a grid of parameters, resumably.

    OMP_NUM_THREADS=1 python -m drostudy sweep --grid default --workers 2   # `make sweep`: notebook 02
    python -m drostudy sweep --notebook notebooks/02_reward_model_robustness.ipynb \
        --param HEADLINE_RADIUS=0.2,0.5 --param SPLITS=A --param SEEDS=3 --workers 2
    python -m drostudy sweep --notebook notebooks/01_worst_case_weights.ipynb --param RADIUS=0.1,0.3
    python -m drostudy sweep --command rm --param divergence=tv --param radius=0,0.1 --workers 2

Each run goes to runs/<sweep-name>/<run-id>/ (run-id: the swept parameters sorted by name,
`DIVERGENCE=tv,RADIUS=0.1`) and holds params.json, log.txt (the run's stdout/stderr), the executed notebook
or the command's metrics.json, and at the end either done.json (written atomically, last: the run is
finished) or error.txt (the tail of the log). A rerun skips finished runs and redoes the missing and failed
ones. Notebook runs write their results/ and figures/ inside their run folder. All runs' results land in one
tidy table, runs/<sweep-name>/results.{parquet,csv} (drostudy.analysis.tidy), with each run's parameters,
status and timings, rewritten as each run ends: an interrupted sweep's finished runs are already in it. Notebook
05 reads every runs/*/results.parquet as a stage of its own (`rm @default`).

The default grid (PRESETS) runs notebook 02 on its split A without label noise, once per headline TV
radius and smooth ball; each run trains ordinary, pair-level, group-level and DORO reward models at the
headline radius and the smooth ball at two radii, 10 paired seeds each, on cached MiniLM features (the
ordinary runs, the same in every run, count once in the table). `--param NAME=VALUES` overrides a preset's values, e.g.
`--param SMOKE=True` for a seconds-long check of the whole pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from drostudy.analysis import tidy
from drostudy.codehash import code_fingerprint, notebook_fingerprint
from drostudy.config import usage_errors
from drostudy.io import atomic_write_text, notebook_paths, notebooks_dir
from drostudy.runner.grid import expand_grid, parse_param, run_id, validate_grid
from drostudy.runner.tasks import COMMANDS, DONE, ERROR, Task, run_tasks

# The study's default grid: notebook 02 at each (divergence, radius), its other comparisons (matched radii of
# the other divergences, further radii, the filtering experiment) switched off, as the grid covers them.
# cvar's radius is its tail fraction alpha in (0, 1] (alpha 1 = ordinary). Sized to stay under 30 minutes on
# 2 cores (README: measured times).
PRESETS = {
    "default": {
        "notebook": "02_reward_model_robustness.ipynb",
        # split A only, no noise levels, no TV radius axis, no knob grids of ordinary training (#24's
        # matched comparison is notebook 02's own): the grid is the axis
        "fixed": {
            "SPLITS": "A",
            "NOISE": "",
            "TV_RADII": "",
            "WEIGHT_DECAY_GRID": "",
            "STEPS_GRID": "",
            "LABEL_SMOOTHING_GRID": "",
            "SMOOTH_RADII": "0.3,1",
            "HEADLINE_SEEDS": 10,
        },
        "grid": [{"HEADLINE_RADIUS": [0.2, 0.5, 0.9], "SMOOTH": ["kl", "chi2"]}],
    }
}


def runs_root() -> Path:
    """Where sweeps and the study write: $DROSTUDY_RUNS or <repo>/runs."""
    root = os.environ.get("DROSTUDY_RUNS")
    return Path(root) if root else Path(__file__).resolve().parents[2] / "runs"


def results_table(tasks: list[Task], records: list[dict]) -> pd.DataFrame:
    """The tidy rows of every run (a run without metrics gives one row), with its params, status, timings."""
    frames = []
    for task, record in zip(tasks, records, strict=True):
        done = json.loads((task.run_dir / DONE).read_text()) if (task.run_dir / DONE).exists() else {}
        info = {**{k: done.get(k) for k in ("wall_s", "run_s", "overhead_s")}, **record}
        info["status"] = "ok" if record["status"] == "skipped" else record["status"]
        rows = tidy.collect(task.run_dir) if task.run_dir.exists() else pd.DataFrame()
        rows = rows if len(rows) else pd.DataFrame([{"run_dir": str(task.run_dir)}])
        for name, value in task.params.items():  # a column the metrics filled wins over the parameter
            rows[name] = rows[name].where(rows[name].notna(), value) if name in rows else value
        frames.append(
            rows.assign(
                **{k: info.get(k) for k in ("run_id", "status", "wall_s", "run_s", "overhead_s")}
            )
        )
    seen: set = set()
    table = pd.concat([drop_repeated_runs(f, seen) for f in frames], ignore_index=True)
    return table.reindex(columns=list(dict.fromkeys([*tidy.COLUMNS, *table.columns])))


def drop_repeated_runs(frame: pd.DataFrame, seen: set) -> pd.DataFrame:
    """`frame` without the runs whose rows (setting, seed, every domain, metric and value) repeat a run
    already in `seen` (then added to it). Notebook 02's ordinary baseline is recorded by every grid point
    with the same numbers: kept once, under the first, or notebook 05 would count its copies as seeds."""
    if "run" not in frame or frame["run"].isna().all():
        return frame
    keys = [c for c in (*tidy.RUN_KEYS, "domain", "metric", "value") if c in frame]
    repeated = []
    for run, rows in frame.groupby("run", sort=False):
        signature = tuple(sorted(map(str, rows[keys].itertuples(index=False))))
        repeated += [run] if signature in seen else []
        seen.add(signature)
    return frame[~frame["run"].isin(repeated)]


def plan(args: argparse.Namespace) -> tuple[str, str, list[dict], str, list[str]]:
    """(kind, target, parameter combinations, sweep name, the preset's fixed parameters) from the command
    line; ValueError when bad."""
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1; got {args.workers}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1; got {args.limit}")
    if args.notebook and not Path(args.notebook).is_file():
        known = [os.path.relpath(p) for p in notebook_paths()]
        raise ValueError(f"no notebook at {args.notebook!r}; the study's are {known}")
    if args.grid and args.grid not in PRESETS:
        raise ValueError(f"unknown grid {args.grid!r}; expected one of {sorted(PRESETS)}")
    preset = PRESETS[args.grid] if args.grid else {}
    overrides = {}
    for name, values in map(parse_param, args.param):
        if name in overrides:
            raise ValueError(f"parameter {name!r} is given twice")
        overrides[name] = values
    fixed = {k: [v] for k, v in preset.get("fixed", {}).items() if k not in overrides}
    grids = [{**fixed, **g, **overrides} for g in preset.get("grid", [{}])]
    kind = "command" if args.command or "command" in preset else "notebook"
    target = args.notebook or args.command or preset.get("command")
    target = target or str(notebooks_dir() / preset["notebook"])
    # an override of a preset's swept parameter makes its sub-grids overlap: each point runs once
    combos = list({json.dumps(c, sort_keys=True): c for c in expand_grid(grids)}.values())
    combos = validate_grid(kind, str(target), sorted({k for g in grids for k in g}), combos)
    name = args.name or args.grid or (Path(target).stem if kind == "notebook" else target)
    if args.grid and overrides and not args.name:  # a changed preset never overwrites the preset's table
        name += "@" + ",".join(f"{k}={'|'.join(map(str, v))}" for k, v in sorted(overrides.items()))
    combos = combos[: args.limit] if args.limit else combos
    return kind, str(target), combos, name, sorted(fixed)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description, parser.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--notebook", help="notebook to run per grid point (papermill parameters)")
    what.add_argument(
        "--command", help=f"training command to run per grid point: one of {sorted(COMMANDS)}"
    )
    what.add_argument("--grid", help=f"a named preset: one of {sorted(PRESETS)}")
    parser.add_argument(
        "--param", action="append", default=[], help="NAME=V1,V2,... (repeat; overrides a preset)"
    )
    parser.add_argument("--workers", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument(
        "--name", default=None, help="sweep folder name under runs/ (default: notebook/command/grid)"
    )
    parser.add_argument(
        "--runs-dir", default=None, help="root of the sweep folders (default: $DROSTUDY_RUNS or runs/)"
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run (default: none)")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="run only the first N grid points (the whole grid is still checked): a quick try",
    )


def cli_main(args: argparse.Namespace) -> int:
    with usage_errors():  # every check of the command line, before anything runs
        kind, target, combos, name, fixed = plan(args)
        sweep_dir = Path(args.runs_dir) if args.runs_dir else runs_root()
        sweep_dir = sweep_dir / name
        fingerprint = (
            notebook_fingerprint(target)
            if kind == "notebook"
            else code_fingerprint([COMMANDS[target]])["fingerprint"]  # target: rm, dpo or rl
        )
        tasks = [
            Task(kind, target, c, sweep_dir / run_id(_without(c, fixed)), fingerprint) for c in combos
        ]
        if len({t.run_dir for t in tasks}) < len(tasks):
            raise ValueError(
                "two grid points map to the same run folder; give distinct parameter values"
            )
    print(f"sweep {name!r}: {len(tasks)} runs of {target} into {sweep_dir}")

    def env_of(task: Task) -> dict:  # each notebook run records into its own folder, never into results/
        return {
            "DROSTUDY_RESULTS": str(task.run_dir / "results"),
            "DROSTUDY_FIGURES": str(task.run_dir / "figures"),
        }

    def write_table(records: dict) -> None:  # after every run: an interrupted sweep keeps what finished
        ended = [t for t in tasks if t.run_dir in records]
        if ended:
            write_results(results_table(ended, [records[t.run_dir] for t in ended]), sweep_dir)

    records = run_tasks(
        tasks, args.workers, args.timeout, env_of if kind == "notebook" else None, write_table
    )
    report(records, sweep_dir)
    return int(any(r["status"] == "failed" for r in records))


def _without(params: dict, names: list[str]) -> dict:
    return {k: v for k, v in params.items() if k not in names}


def write_results(table: pd.DataFrame, sweep_dir: Path) -> None:
    """results.parquet and results.csv of a sweep, each replaced atomically (a reader never sees half)."""
    tmp = sweep_dir / "results.parquet.tmp"
    table.to_parquet(tmp, index=False)
    os.replace(tmp, sweep_dir / "results.parquet")
    atomic_write_text(sweep_dir / "results.csv", table.to_csv(index=False))


def report(records: list[dict], sweep_dir: Path) -> None:
    """Print counts, the failed runs, and the sweep's overhead per run (time beyond the run itself)."""
    counts = {s: sum(r["status"] == s for r in records) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} ran, {counts['skipped']} already finished, {counts['failed']} failed")
    ran = [r for r in records if r["status"] == "ok" and r.get("overhead_s") is not None]
    if ran:
        wall, over = (sum(r[k] for r in ran) / len(ran) for k in ("wall_s", "overhead_s"))
        print(
            f"per run: {wall:.1f} s wall, of which {over:.1f} s overhead (process, imports, kernel start)"
        )
    for r in records:
        if r["status"] == "failed":
            print(f"FAILED {r['run_id']}: see {sweep_dir / r['run_id'] / ERROR}")
    print(f"table: {sweep_dir / 'results.parquet'} (and .csv)")
