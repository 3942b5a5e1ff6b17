"""Headless runs: a notebook through papermill in the venv's own `python3` kernel, or a training command,
each in a process of its own, finished when its done.json is written (atomically, last).

jupyter_client starts the `python3` kernel with the interpreter that runs papermill (a kernel spec whose
command is `python` is rewritten to sys.executable), so running this module from the venv runs the notebook
in the venv; no kernel has to be registered. The kernel inherits this process's environment: HF_HUB_OFFLINE,
DROSTUDY_FIGURES (where figures go), DROSTUDY_RESULTS (where results/NN_slug.json goes).

`python -m drostudy.runner.notebooks IN.ipynb OUT.ipynb --parameters '{"SMOKE": true}'` is what a sweep worker runs.
`run_tasks` is the runner that drostudy.runner.sweep and drostudy.runner.study share: a process per run (so each run has
its own environment and working directory, and a crash or a timeout stays local), threads to wait on them.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from drostudy.io import (  # noqa: F401 (notebook_paths, notebooks_dir: this module's API too)
    METRICS_FILE,
    NUMBERED,
    atomic_write_json,
    atomic_write_text,
    notebook_paths,
    notebooks_dir,
)
from drostudy.progress import BATCH_ENV
from drostudy.threads import numerics_env, worker_thread_env

KERNEL = "python3"
COMMANDS = {"rm": "drostudy.reward.run", "dpo": "drostudy.dpo.run", "rl": "drostudy.rl.run"}
DONE, PARAMS, ERROR, LOG = "done.json", "params.json", "error.txt", "log.txt"
ERROR_TAIL_LINES = 80
POLL_S, GRACE_S = 2.0, 10.0  # monitor period; how long a stopped run may take to stop


def notebook_parameters(path: str | os.PathLike) -> dict:
    """Name -> default value of each variable the notebook's `parameters`-tagged cell assigns.

    A default that is not a literal (an expression) maps to its source text. No parameters cell: {}.
    """
    cells = json.loads(Path(path).read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    params = {}
    for cell in tagged[:1]:  # papermill uses the first tagged cell
        source = "".join(cell["source"])
        for node in ast.parse(source).body:
            target = node.targets[-1] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            if isinstance(target, ast.Name) and getattr(node, "value", None) is not None:
                params[target.id] = _literal(ast.get_source_segment(source, node.value))
    return params


def _literal(source: str):
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return source


def check_parameters(path: str | os.PathLike, parameters: dict) -> None:
    """Raise ValueError when `parameters` names a variable that the notebook's parameters cell lacks.

    papermill would inject it silently and the notebook would ignore it: a typo would go unnoticed.
    """
    known = notebook_parameters(path)
    for name in parameters:
        if name not in known:
            raise ValueError(
                f"unknown parameter {name!r} for {Path(path).name}; expected one of {sorted(known)}"
            )


@contextlib.contextmanager
def _environment(env: dict | None):
    """Temporarily set environment variables (the kernel copies os.environ when it starts)."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(
    path: str | os.PathLike,
    out_path: str | os.PathLike,
    parameters: dict | None = None,
    cwd: str | os.PathLike | None = None,
    timeout: float | None = None,
    env: dict | None = None,
    progress_bar: bool = True,
) -> Path:
    """Execute `path` with `parameters` into `out_path` (written even when a cell fails); return out_path.

    cwd: the kernel's working directory (default: the notebook's folder, as in JupyterLab); timeout: seconds
    per cell (None: no limit); env: extra environment variables for the kernel (this process's environment
    is set while the kernel starts, so do not call this from several threads at once). A failing cell raises
    papermill.PapermillExecutionError after the executed notebook, with its traceback, is saved.
    """
    import papermill

    path, out_path = Path(path), Path(out_path)
    parameters = dict(parameters or {})
    check_parameters(path, parameters)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with _environment(env):
        papermill.execute_notebook(
            str(path),
            str(out_path),
            parameters=parameters,
            kernel_name=KERNEL,
            language="python",
            cwd=str(cwd if cwd is not None else path.parent),
            execution_timeout=timeout,
            progress_bar=progress_bar,
            report_mode=False,
        )
    return out_path


def executed_seconds(out_path: str | os.PathLike) -> float:
    """Seconds the cells of an executed notebook ran (papermill's per-cell durations, summed)."""
    cells = json.loads(Path(out_path).read_text())["cells"]
    return float(sum((c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0) for c in cells))


def printed_text(out_path: str | os.PathLike) -> str:
    """Everything the cells of an executed notebook printed (their stream outputs), in cell order."""
    cells = json.loads(Path(out_path).read_text())["cells"]
    return "".join("".join(o.get("text", "")) for c in cells for o in c.get("outputs", []))


@dataclasses.dataclass(frozen=True)
class Task:
    """One run: a notebook path or a command name, its parameters, its folder."""

    kind: str
    """notebook or command"""
    target: str
    """the notebook's path, or the command's name (rm, dpo, rl)"""
    params: dict
    """papermill parameters, or the command's options without the dashes"""
    run_dir: Path
    """the run's own folder"""
    fingerprint: str = ""
    """what else the result depends on (the notebook's code); a change reruns a finished run"""


def is_done(task: Task) -> bool:
    """Whether `task.run_dir` holds a finished run with the same parameters and fingerprint."""
    try:
        done = json.loads((task.run_dir / DONE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    same_params = done.get("params") == json.loads(json.dumps(task.params))
    return same_params and done.get("fingerprint") == task.fingerprint


def _argv(task: Task) -> list[str]:
    if task.kind == "notebook":
        out = task.run_dir / Path(task.target).name
        return [
            sys.executable,
            "-m",
            "drostudy.runner.notebooks",
            task.target,
            str(out),
            "--parameters",
            json.dumps(task.params),
            "--cwd",
            str(Path(task.target).parent),
        ]
    flags = [(f"--{k.replace('_', '-')}", flag_value(v)) for k, v in task.params.items()]
    return [
        sys.executable,
        "-m",
        "drostudy",
        task.target,
        *itertools.chain(*flags),
        "--out",
        str(task.run_dir),
    ]


def flag_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def run_task(
    task: Task, timeout: float | None = None, env: dict | None = None, monitor: Callable | None = None
) -> dict:
    """Run one task in a subprocess; write done.json (success, last) or error.txt; return its record.

    env: extra environment variables (over this process's, over BATCH_ENV for a notebook, over the
    thread-independent numerics of drostudy.threads.numerics_env); monitor: called
    every POLL_S seconds meanwhile. record: run_id, status (ok / failed), wall_s (the whole subprocess),
    run_s (the notebook's cells or the command's own total), overhead_s = wall_s - run_s.
    """
    task.run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (DONE, ERROR):
        (task.run_dir / stale).unlink(missing_ok=True)
    atomic_write_json(task.run_dir / PARAMS, task.params)
    batch = BATCH_ENV if task.kind == "notebook" else {}
    start = time.perf_counter()
    with open(task.run_dir / LOG, "w") as log:
        proc = subprocess.Popen(
            _argv(task),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**numerics_env(), **batch, **os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
        failure = _wait(proc, timeout, monitor)
    wall = time.perf_counter() - start
    run_s = _run_seconds(task)
    if failure is None and run_s is None:
        failure = (
            f"finished without writing its {'notebook' if task.kind == 'notebook' else METRICS_FILE}"
        )
    record = {
        "run_id": task.run_dir.name,
        "status": "failed" if failure else "ok",
        "wall_s": wall,
        "run_s": run_s,
        "overhead_s": None if run_s is None else wall - run_s,
    }
    if failure:
        tail = (task.run_dir / LOG).read_text(errors="replace").splitlines()[-ERROR_TAIL_LINES:]
        atomic_write_text(task.run_dir / ERROR, f"{failure}\n\n" + "\n".join(tail) + "\n")
    else:
        atomic_write_json(
            task.run_dir / DONE, {**record, "params": task.params, "fingerprint": task.fingerprint}
        )
    return record


def _wait(proc: subprocess.Popen, timeout: float | None, monitor: Callable | None) -> str | None:
    """Wait for `proc`, calling `monitor` meanwhile; None when it exited with 0, else what went wrong.

    On Ctrl-C (or any error here) the run stops too: it gets SIGINT and GRACE_S seconds to stop cleanly
    (papermill then shuts its kernel down), then SIGKILL; it stays unfinished (no done.json).
    """
    start = time.monotonic()
    try:
        while True:
            try:
                code = proc.wait(timeout=POLL_S)
                return None if code == 0 else f"exit status {code}"
            except subprocess.TimeoutExpired:
                if timeout is not None and time.monotonic() - start > timeout:
                    proc.kill()
                    proc.wait()
                    return f"timed out after {timeout} s"
                if monitor is not None:
                    monitor()
    except BaseException:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=GRACE_S)
        proc.kill()
        proc.wait()
        raise


def _run_seconds(task: Task) -> float | None:
    if task.kind == "notebook":
        out = task.run_dir / Path(task.target).name
        return executed_seconds(out) if out.exists() else None
    path = task.run_dir / METRICS_FILE
    return json.loads(path.read_text()).get("timings", {}).get("total_s", 0.0) if path.exists() else None


def run_tasks(
    tasks: list[Task], workers: int = 1, timeout: float | None = None, env_of=None, on_record=None
) -> list[dict]:
    """Run the unfinished `tasks`, `workers` at a time; one record per task (status "skipped" if finished).

    A failed task does not stop the others. `env_of(task)` gives extra environment variables for a task;
    `on_record(records)` is called with {run_dir: record} so far, before the first run and after each.
    With several workers each run gets its share of the cores (drostudy.threads.worker_thread_env).
    """
    records = {t.run_dir: {"run_id": t.run_dir.name, "status": "skipped"} for t in tasks if is_done(t)}
    todo = [t for t in tasks if t.run_dir not in records]
    if on_record:
        on_record(records)
    workers = max(1, min(workers, len(todo)))
    threads = worker_thread_env(workers)  # side by side, each run gets its share of the cores
    pool = cf.ThreadPoolExecutor(max_workers=workers)
    try:
        envs = {t.run_dir: {**threads, **(env_of(t) if env_of else {})} for t in todo}
        futures = {pool.submit(run_task, t, timeout, envs[t.run_dir]): t for t in todo}
        bar = tqdm(
            cf.as_completed(futures), total=len(tasks), initial=len(records), desc="runs", unit="run"
        )
        for future in bar:
            records[futures[future].run_dir] = future.result()
            bar.set_postfix(failed=sum(r["status"] == "failed" for r in records.values()))
            if on_record:
                on_record(records)
    finally:  # on Ctrl-C start nothing new; runs in flight get the signal too and stay unfinished
        pool.shutdown(wait=True, cancel_futures=True)
    return [records[t.run_dir] for t in tasks]


def main(argv: list[str] | None = None) -> int:
    """Entry point of a sweep worker process (one notebook run)."""
    # jsonschema (via nbformat) imports rfc3987_syntax when installed, which builds a grammar at import:
    # 3-5 s per run of a sweep, for an IRI format check that notebook validation never uses.
    sys.modules.setdefault("rfc3987_syntax", None)
    parser = argparse.ArgumentParser(description="execute one notebook with papermill")
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument("--parameters", default="{}", help="JSON object of papermill parameters")
    parser.add_argument("--cwd", default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell")
    args = parser.parse_args(argv)
    execute_notebook(args.notebook, args.out, json.loads(args.parameters), args.cwd, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
