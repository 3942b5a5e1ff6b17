"""`python -m drostudy study [--full 0|1] [--smoke]`: every numbered notebook, in order, headless (`make study`).

A notebook whose metadata reads `"drostudy": {"study": "own"}` runs only when `--only` names it: it is
too long for the study's budget and runs on its own (notebook 06, `make capacity`).

Each notebook NN_slug.ipynb runs through papermill into runs/study/NN_slug/ (the executed copy, log.txt,
params.json, then done.json or error.txt); the sources in notebooks/ are never written. Parameters passed:
FULL (the larger GPU configuration) and SMOKE (the CI-sized one), each only to notebooks whose parameters
cell defines it, and any `--param NAME=VALUE` (e.g. `--only 06 --param STAGES=testbed`: notebook 06 a stage
at a time) to the chosen notebooks that define NAME. Resumable: a notebook is skipped when it finished
before with the same parameters, the same code, and the same results of the notebooks before it
(results/MM_*.json, MM < NN), so that rerunning notebook 02 makes 05, which reads its results, run
again. A failed notebook does not stop the later ones; the exit status is non-zero when any failed.

Provenance: after each notebook it runs, results/PROVENANCE.json records the code it ran (fingerprint), its
wall time and the machine (drostudy.analysis.provenance); `python -m drostudy.analysis.findings` then states
the findings and their provenance in the README (`make study` runs both).

Progress on the console: a line per notebook started and ended, and while one runs, a line whenever its
cells done or its training runs done move (with an estimate of the time its runs still need; at least a
line a minute), e.g. `[3/5 notebooks] 03_dpo_robustness: cell 5/11, run 3/8, ~4 min left in its runs`.
The executed notebooks get no progress bars or model load reports (drostudy.progress.BATCH_ENV). One
notebook runs at a time, with all cores; OMP_NUM_THREADS=N (also MKL_NUM_THREADS) caps its threads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from drostudy.analysis.provenance import notebook_entry, write_provenance
from drostudy.analysis.tidy import results_dir
from drostudy.codehash import notebook_fingerprint
from drostudy.config import usage_errors
from drostudy.io import notebook_paths
from drostudy.progress import PROGRESS_ENV, NotebookProgress
from drostudy.runner.grid import parse_value
from drostudy.runner.notebooks import notebook_parameters
from drostudy.runner.sweep import runs_root
from drostudy.runner.tasks import ERROR, LOG, Task, is_done, run_task
from drostudy.threads import describe_threads

PROGRESS = "progress.jsonl"  # the notebook's progress events (drostudy.progress), in its run folder


def study_parameters(path: Path, full: bool, smoke: bool, extra: dict | None = None) -> dict:
    """FULL / SMOKE and the `extra` parameters for the notebook at `path`, only those its parameters cell
    defines."""
    defined = notebook_parameters(path)
    wanted = {"FULL": bool(full), "SMOKE": bool(smoke), **(extra or {})}
    return {name: value for name, value in wanted.items() if name in defined}


def extra_parameters(specs: list[str], paths: list[Path]) -> dict:
    """--param NAME=VALUE specs as {NAME: value} (JSON if it parses, else the text, commas included);
    ValueError naming a malformed spec or a NAME that none of the chosen notebooks defines."""
    extra = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ValueError(f"--param {spec!r}: expected NAME=VALUE with NAME an identifier")
        extra[name.strip()] = parse_value(value.strip())
    defined = set().union(*(notebook_parameters(p) for p in paths)) if paths else set()
    unknown = sorted(set(extra) - defined)
    if unknown:
        raise ValueError(
            f"--param: {unknown} defined by none of the chosen notebooks "
            f"({', '.join(p.name for p in paths)}); they define {sorted(defined)}"
        )
    return extra


def upstream_fingerprint(path: Path, results: Path) -> str:
    """Hash of the result files of the notebooks numbered before `path` (what it may read)."""
    digest = hashlib.sha256()
    for prior in sorted(results.glob("[0-9][0-9]_*.json")):
        if prior.name[:2] < path.name[:2]:
            digest.update(prior.name.encode() + b"\0" + prior.read_bytes())
    return digest.hexdigest()[:16]


def study_task(path: Path, out_dir: Path, full: bool, smoke: bool, extra: dict | None = None) -> Task:
    """The run of one notebook; built just before it runs, as it depends on the results written so far."""
    fingerprint = notebook_fingerprint(path) + "+" + upstream_fingerprint(path, results_dir())
    params = study_parameters(path, full, smoke, extra)
    return Task("notebook", str(path), params, out_dir / path.stem, fingerprint)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description, parser.formatter_class = __doc__, argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--full", type=int, choices=(0, 1), default=0, help="1: each notebook's GPU configuration"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="each notebook's smallest (CI) configuration"
    )
    parser.add_argument("--only", default="", help="comma-separated notebook numbers to run, e.g. 02,05")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter of the chosen notebooks that define NAME, the value whole (e.g. STAGES=dpo,testbed)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per notebook (default: none)"
    )
    parser.add_argument(
        "--runs-dir", default=None, help="root of runs/ (default: $DROSTUDY_RUNS or runs/)"
    )
    parser.add_argument(
        "--notebooks", default=None, help="folder of the NN_slug notebooks (default: notebooks/)"
    )


def chosen_notebooks(args: argparse.Namespace) -> list[Path]:
    """The notebooks --only picks (all by default); ValueError naming a bad --only, --notebooks, --timeout."""
    if args.notebooks is not None and not Path(args.notebooks).is_dir():
        raise ValueError(f"--notebooks {args.notebooks!r} is not a folder")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds; got {args.timeout}")
    paths = notebook_paths(args.notebooks)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = only - {p.name[:2] for p in paths}
    if unknown:
        raise ValueError(
            f"--only: unknown notebook number(s) {sorted(unknown)}; expected some of "
            f"{[p.name[:2] for p in paths]}"
        )
    if only:
        return [p for p in paths if p.name[:2] in only]
    return [p for p in paths if runs_in_the_study(p)]


def runs_in_the_study(path: Path) -> bool:
    """Whether `make study` runs the notebook: all do but those whose metadata says `"drostudy": {"study":
    "own"}`, a notebook too long for the study's budget that runs on its own (`--only NN`, e.g. `make
    capacity`) and keeps its results beside the study's."""
    metadata = json.loads(path.read_text()).get("metadata", {})
    return metadata.get("drostudy", {}).get("study", "default") != "own"


def cli_main(args: argparse.Namespace) -> int:
    with usage_errors():
        paths = chosen_notebooks(args)
        extra = extra_parameters(args.param, paths)
    out_dir = (Path(args.runs_dir) if args.runs_dir else runs_root()) / "study"
    print(f"study: {len(paths)} notebooks into {out_dir} (FULL={bool(args.full)}, SMOKE={args.smoke})")
    print(f"study: one notebook at a time; {describe_threads(1)}")
    records = []
    for number, path in enumerate(paths, 1):
        task = study_task(path, out_dir, bool(args.full), args.smoke, extra)
        position = f"{number}/{len(paths)}"
        if is_done(task):
            print(f"[{position} notebooks] {path.name}: finished before with these inputs, skipped")
            records.append({"run_id": path.stem, "status": "skipped", "wall_s": None})
            continue
        print(
            f"[{position} notebooks] {path.name}: running {task.params or ''} (log: {task.run_dir / LOG})"
        )
        record = run_notebook(task, position, args.timeout)
        print(
            f"[{position} notebooks] {path.name}: {record['status']} in {record['wall_s']:.0f} s",
            flush=True,
        )
        records.append(record)
        # after every notebook, so that an interrupted study still says what made the results it left
        entry = notebook_entry(path, record["status"], record["wall_s"], task.params)
        write_provenance(results_dir(), {path.stem: entry}, Path(__file__).resolve().parents[2])
    print_summary(records, out_dir)
    return int(any(r["status"] == "failed" for r in records))


def run_notebook(task: Task, position: str, timeout: float | None = None) -> dict:
    """Run the study's notebook `task`, printing its cells and training runs done as they move."""
    events = task.run_dir / PROGRESS
    task.run_dir.mkdir(parents=True, exist_ok=True)
    events.unlink(missing_ok=True)  # this run's events only: the time left counts this run's trainings
    executed = task.run_dir / Path(task.target).name
    watch = NotebookProgress(Path(task.target).stem, position, executed, events)
    executed.unlink(missing_ok=True)  # an earlier run's copy would show its cells until papermill saves
    record = run_task(task, timeout, env={PROGRESS_ENV: str(events)}, monitor=watch.poll)
    watch.poll()  # the final state: the run may end between two polls
    return record


def print_summary(records: list[dict], out_dir: Path) -> None:
    """One line per notebook: status and seconds (wall, and in its cells), then where failures are told."""
    print("\nnotebook                          status    wall s   cells s")
    for r in records:
        wall = "" if r.get("wall_s") is None else f"{r['wall_s']:.1f}"
        cells = "" if r.get("run_s") is None else f"{r['run_s']:.1f}"
        print(f"{r['run_id']:<33} {r['status']:<8} {wall:>7} {cells:>9}")
    total = sum(r.get("wall_s") or 0.0 for r in records)
    print(f"total {total:.0f} s")
    for r in records:
        if r["status"] == "failed":
            print(f"FAILED {r['run_id']}: see {out_dir / r['run_id'] / ERROR}")
