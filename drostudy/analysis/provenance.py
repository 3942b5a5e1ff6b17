"""`results/PROVENANCE.json`: which code, machine and run made the committed results, and whether they are stale.

`make study` (drostudy.runner.study) records, for every notebook it ran, the fingerprint of the code it ran
(its code cells and the drostudy modules they import, drostudy.codehash), its wall time and the date; and
for the study as a whole the git commit, CPU model, core and thread counts and library versions. A notebook
skipped because it had finished with the same inputs keeps the entry of the run that made its results.

`stale_notebooks` compares each entry with the code as it is now. The README's findings section states the
result (drostudy.analysis.findings), and a test checks that section against this file: a code change that
would alter the findings cannot land with old findings unnoticed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

from drostudy.codehash import changed_modules, code_fingerprint, notebook_fingerprint, notebook_roots
from drostudy.io import atomic_write_json, notebook_paths

PROVENANCE_FILE = "PROVENANCE.json"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(repo: Path) -> dict:
    """{"commit": HEAD's hash or None, "dirty": whether drostudy/ or notebooks/ differ from it}."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", "drostudy", "notebooks")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def machine() -> dict:
    """The machine a study ran on: CPU, cores, the thread variables set, Python, torch and platform."""
    import torch

    from drostudy.threads import REPRODUCIBLE_NUMERICS, THREAD_VARIABLES, available_cores, numerics_env

    numerics = {**numerics_env(), **{k: os.environ[k] for k in REPRODUCIBLE_NUMERICS if k in os.environ}}
    return {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "thread_variables": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        "numerics": numerics,  # what the notebooks' processes ran with (drostudy.threads.numerics_env)
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def notebook_entry(path: Path, status: str, wall_s: float | None, params: dict) -> dict:
    """What PROVENANCE.json keeps of one notebook run: its code, parameters, status, wall time and date."""
    return {
        "fingerprint": notebook_fingerprint(path),
        "modules": code_fingerprint(notebook_roots(path))["modules"],
        "params": params,
        "status": status,
        "wall_s": None if wall_s is None else round(wall_s, 1),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def read_provenance(results: str | os.PathLike) -> dict:
    """The provenance record under `results` ({} when none was written)."""
    path = Path(results) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_provenance(results: str | os.PathLike, entries: dict[str, dict], repo: Path) -> dict:
    """Merge this study's notebook `entries` (stem -> `notebook_entry`) into results/PROVENANCE.json.

    Entries of notebooks this study did not run (or skipped as finished) are kept from the earlier file.
    """
    record = read_provenance(results)
    notebooks = {**record.get("notebooks", {}), **entries}
    record = {
        "git": git_commit(repo),
        "machine": machine(),
        "notebooks": dict(sorted(notebooks.items())),
    }
    atomic_write_json(Path(results) / PROVENANCE_FILE, record)
    return record


def stale_notebooks(
    provenance: dict, notebooks: str | os.PathLike | None = None
) -> dict[str, list[str]]:
    """Notebook stem -> the drostudy modules (or "code cells") changed since it made its recorded results.

    A notebook recorded in `provenance` whose source is gone counts as stale too ("notebook removed").
    """
    paths = {p.stem: p for p in notebook_paths(notebooks)}
    stale = {}
    for stem, entry in provenance.get("notebooks", {}).items():
        if stem not in paths:
            stale[stem] = ["notebook removed"]
            continue
        if entry.get("fingerprint") == notebook_fingerprint(paths[stem]):
            continue
        now = code_fingerprint(notebook_roots(paths[stem]))
        changed = changed_modules({"modules": entry.get("modules")}, now)
        cells_then = (entry.get("fingerprint") or "").split("+")[0]
        if cells_then != notebook_fingerprint(paths[stem]).split("+")[0]:
            changed.insert(0, "code cells")
        stale[stem] = changed
    return stale
