"""Progress a person can see: of a headless notebook on the console (its cells done, its training runs done,
the time left), and drostudy's progress bars (`tqdm`), which batch runs turn off.

The notebook side writes events to the file named by $DROSTUDY_PROGRESS (set by the study for the
notebook it runs; unset in JupyterLab, where nothing is written): `runs_planned(n)` when a notebook knows
how many runs it will do, `run_finished(...)` from drostudy.runs.run_or_resume after each run,
one JSON object a line. The study side (`NotebookProgress`) reads that file and the executed notebook,
which papermill saves as each cell starts and ends, and prints a line when either moves:

    [2/5 notebooks] 03_dpo_robustness: cell 5/11, run 3/8, ~4 min left in its runs
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

PROGRESS_ENV = "DROSTUDY_PROGRESS"
# A notebook run in a batch is read later, not watched: no progress bars (their frozen `0%|` text would stay
# in the executed notebook; JupyterLab, where they render, does not get these), no model load reports or
# library warnings. Variables the user set win.
BATCH_ENV = {
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "PYTHONWARNINGS": "ignore::FutureWarning",  # libraries' deprecation notices, for their callers
}
HEARTBEAT_S = 60.0  # a line at least this often while a long cell runs, so the console never looks stuck


def _emit(event: dict) -> None:
    path = os.environ.get(PROGRESS_ENV)
    if not path:
        return
    with open(path, "a") as handle:  # one short line per write: appends of it do not interleave
        handle.write(json.dumps({**event, "time": time.time()}) + "\n")


def tqdm(*args, **kwargs):
    """tqdm.auto's bar (a widget in JupyterLab, text in a terminal), off when $TQDM_DISABLE is set.

    tqdm's notebook bar ignores $TQDM_DISABLE, and in a batch run its frozen `0%|` text would stay in the
    executed notebook; BATCH_ENV sets it for batch runs.
    """
    from tqdm.auto import tqdm as auto

    off = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return auto(*args, **{**kwargs, "disable": kwargs.get("disable", False) or off})


def runs_planned(count: int) -> None:
    """Announce that the notebook will do `count` training runs (finished ones included)."""
    _emit({"event": "planned", "runs": int(count)})


def run_finished(run_dir: str | os.PathLike | None, seconds: float, skipped: bool) -> None:
    """One run done: trained for `seconds`, or `skipped` (finished before, read from its folder)."""
    _emit({"event": "run", "run_dir": str(run_dir), "seconds": float(seconds), "skipped": bool(skipped)})


def read_events(path: str | os.PathLike) -> list[dict]:
    """The events written so far (a line still being written is left for the next read)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return events


def runs_status(events: list[dict], now: float | None = None) -> tuple[int, int | None, float | None]:
    """(runs done, runs planned or None, estimated seconds left or None) from the events at time `now`.

    The estimate is the mean time of the runs trained in this session times the runs still to do, less the
    time the run in progress has had; runs read back from their folders cost nothing and do not count.
    """
    planned = sum(e["runs"] for e in events if e["event"] == "planned") or None
    runs = [e for e in events if e["event"] == "run"]
    trained = [e["seconds"] for e in runs if not e["skipped"]]
    left = None
    if planned is not None and trained:
        to_do = max(0, planned - len(runs))
        running = (time.time() if now is None else now) - runs[-1]["time"] if to_do else 0.0
        left = max(0.0, to_do * sum(trained) / len(trained) - running)
    return len(runs), planned, left


def cells_status(executed: str | os.PathLike) -> tuple[int, int] | None:
    """(cells completed, cells) of a notebook papermill is executing, or None while it is unreadable."""
    try:
        cells = json.loads(Path(executed).read_text())["cells"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None  # not written yet, or caught half-way through one of papermill's saves
    done = sum(c.get("metadata", {}).get("papermill", {}).get("status") == "completed" for c in cells)
    return done, len(cells)


def _duration(seconds: float) -> str:
    return f"~{seconds:.0f} s" if seconds < 90 else f"~{seconds / 60:.0f} min"


class NotebookProgress:
    """Prints the progress of one notebook run (`poll` it every few seconds) as lines on the console."""

    def __init__(self, name: str, position: str, executed: Path, events: Path, out: Callable = print):
        self.name, self.position, self.out = name, position, out
        self.executed, self.events = executed, events
        self.last_state, self.last_time = None, time.monotonic()
        self.cells: tuple[int, int] | None = None

    def state(self) -> tuple:
        """(cells done, cells, runs done, runs planned, seconds left or None)."""
        self.cells = cells_status(self.executed) or self.cells
        return (*(self.cells or (None, None)), *runs_status(read_events(self.events)))

    def line(self, state: tuple) -> str:
        cells_done, cells, done, planned, left = state
        parts = [] if cells is None else [f"cell {cells_done}/{cells}"]
        if done or planned:
            parts.append(f"run {done}/{planned}" if planned else f"run {done}")
        if left is not None:
            parts.append(f"{_duration(left)} left in its runs")
        return f"[{self.position} notebooks] {self.name}: " + (", ".join(parts) or "starting")

    def poll(self) -> None:
        """Print a line when a cell or a run finished, or when nothing was printed for HEARTBEAT_S seconds."""
        state, now = self.state(), time.monotonic()
        if state[:4] != self.last_state or now - self.last_time >= HEARTBEAT_S:
            self.out(self.line(state), flush=True)
            self.last_state, self.last_time = state[:4], now
