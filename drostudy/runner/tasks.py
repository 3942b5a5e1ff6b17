"""Runs in processes of their own: a `Task` is a notebook (through drostudy.runner.notebooks) or a training
command (`python -m drostudy rm|dpo|rl`), run in its folder and finished when its done.json is written
(atomically, last).

`run_tasks` is the runner that drostudy.runner.sweep and drostudy.runner.study share: a process per run (so
each run has its own environment and working directory, and a crash or a timeout stays local), threads to
wait on them, each run's share of the cores from drostudy.threads.
"""

from __future__ import annotations

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

from drostudy.io import METRICS_FILE, atomic_write_json, atomic_write_text
from drostudy.progress import BATCH_ENV
from drostudy.runner.notebooks import executed_seconds
from drostudy.threads import numerics_env, worker_thread_env

COMMANDS = {"rm": "drostudy.reward.run", "dpo": "drostudy.dpo.run", "rl": "drostudy.rl.run"}
DONE, PARAMS, ERROR, LOG = "done.json", "params.json", "error.txt", "log.txt"
ERROR_TAIL_LINES = 80
POLL_S, GRACE_S = 2.0, 10.0  # monitor period; how long a stopped run may take to stop


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
