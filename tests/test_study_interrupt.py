"""An interrupted study loses at most the run in progress; the console shows progress; the executed notebook
stays clean; a results write that fails half-way keeps the previous file and leaves the run unfinished.

The study tests run the real `python -m drostudy study` on a folder holding one small training notebook
(tiny logistic regressions through drostudy.runs.run_or_resume, as notebooks 03 and 04 do): 03 at
SMOKE takes minutes on 2 shared cores, and the interruption test runs a study three times.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from drostudy import io
from drostudy.io import METRICS_FILE, atomic_write_json, atomic_write_text, finished_run
from drostudy.runs import run_or_resume

NAME = "01_tiny_training"
RUNS = 5

SETUP = """
import dataclasses
import time

import torch

from drostudy.io import atomic_write_json, seed_everything
from drostudy.progress import runs_planned, tqdm
from drostudy.analysis.results import results_dir
from drostudy.runner.sweep import runs_root
from drostudy.runs import run_folder, run_or_resume
from drostudy.weights import worst_case_weights


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    radius: float = 0.0
    seed: int = 0
    steps: int = 40


def train(config):
    seed_everything(config.seed)
    x = torch.randn(64, 4)
    y = (x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.5 * torch.randn(64) > 0).float()
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.5)
    for _ in range(config.steps):
        losses = torch.nn.functional.binary_cross_entropy_with_logits(x @ w, y, reduction="none")
        weights = worst_case_weights(losses.detach(), "tv", config.radius)
        opt.zero_grad()
        (weights * losses).sum().backward()
        opt.step()
        time.sleep(0.03)  # the time a real step takes, so that an interruption lands inside a run
    return {"weights": w.detach().tolist(), "loss": float(losses.mean())}
"""

NOISE = """
import datasets
from transformers import TrainingArguments

from drostudy.models import load_reward_model

for _ in tqdm(range(3), desc="a progress bar"):
    pass
datasets.Dataset.from_list([{"a": i} for i in range(5)]).map(lambda row: {"b": row["a"]})
TrainingArguments(output_dir=str(runs_root() / "targs"), gradient_checkpointing=False, report_to=[])
model, tokenizer = load_reward_model("minilm-l6")  # a new head: transformers' load report
"""

LOOP = f"""
configs = [TinyConfig(radius=0.1 * (k % 3), seed=k) for k in range({RUNS})]
runs_planned(len(configs))
runs = [run_or_resume(c, run_folder(runs_root() / "tiny", "run", c), train) for c in tqdm(configs)]
"""

RECORD = f"""
record = [{{k: r[k] for k in ("config", "weights", "loss")}} for r in runs]
atomic_write_json(results_dir() / "{NAME}.json", record)
"""


def training_notebook(folder: Path, noisy: bool = False) -> Path:
    """folder/01_tiny_training.ipynb: a parameters cell, set-up, (noise: what a batch run must not show),
    the runs, the record."""
    cells = [nbformat.v4.new_code_cell("SMOKE = False", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(s) for s in (SETUP, *([NOISE] if noisy else []), LOOP, RECORD)]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / f"{NAME}.ipynb")
    return folder


def study(notebooks: Path, root: Path, **popen):
    """`python -m drostudy study --smoke` of `notebooks`, writing everything under `root`."""
    env = {
        **os.environ,
        "DROSTUDY_RUNS": str(root / "runs"),
        "DROSTUDY_RESULTS": str(root / "results"),
        "DROSTUDY_FIGURES": str(root / "figures"),
        "DROSTUDY_NO_PNG": "1",
    }
    argv = [sys.executable, "-m", "drostudy", "study", "--smoke", "--notebooks", str(notebooks)]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def finished(root: Path) -> dict[str, bytes]:
    """Every finished training run's metrics.json: path -> bytes."""
    return {str(p): p.read_bytes() for p in sorted((root / "runs" / "tiny").glob(f"*/{METRICS_FILE}"))}


def without_timings(root: Path) -> dict[str, dict]:
    metrics = {p: json.loads(b) for p, b in finished(root).items()}
    return {
        Path(p).parent.name: {k: v for k, v in m.items() if k != "timings"} for p, m in metrics.items()
    }


def interrupt(proc: subprocess.Popen, root: Path, after_runs: int) -> None:
    """Ctrl-C the study once `after_runs` runs finished (mid-notebook), then SIGKILL what is left of it."""
    deadline = time.monotonic() + 300
    while len(finished(root)) < after_runs:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.05)
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the study's whole process group
    time.sleep(0.5)
    for member in family:  # the kernel too: it runs in a session of its own
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
    proc.communicate()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(notebooks folder, root, console output) of one uninterrupted study of the training notebook."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    notebooks = training_notebook(tmp / "notebooks", noisy=True)
    proc = study(notebooks, tmp)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return notebooks, tmp, out


@pytest.mark.slow  # a kernel start
def test_the_study_console_shows_progress_and_the_executed_notebook_stays_clean(uninterrupted):
    _, root, out = uninterrupted
    lines = out.splitlines()
    assert f"[1/1 notebooks] {NAME}.ipynb: ok in" in out
    cells = 6  # parameters, papermill's injected parameters, set-up, noise, runs, record
    assert any(f"[1/1 notebooks] {NAME}: cell " in line and f"/{cells}" in line for line in lines), out
    # runs done of the planned total, with a time estimate once one is done; the console polls the run
    # folders, so on a loaded machine it may skip a count (CI once went from 0/5 straight to 2/5)
    done = [int(m.group(1)) for m in re.finditer(rf", run (\d+)/{RUNS}, ~", out)]
    assert any(0 < k < RUNS for k in done), out
    assert f"[1/1 notebooks] {NAME}: cell {cells}/{cells}, run {RUNS}/{RUNS}, ~0 s left" in out, out
    executed = (root / "runs" / "study" / NAME / f"{NAME}.ipynb").read_text()
    for noise in ("0%|", "LOAD REPORT", "FutureWarning", "Map:"):
        assert noise not in executed, noise
    assert len(finished(root)) == RUNS


@pytest.mark.slow  # two more kernel starts
def test_an_interrupted_study_resumes_without_redoing_or_touching_a_finished_run(
    uninterrupted, tmp_path
):
    notebooks, reference, _ = uninterrupted
    root = tmp_path / "interrupted"
    interrupt(study(notebooks, root, start_new_session=True), root, after_runs=2)
    before = finished(root)
    assert 2 <= len(before) < RUNS  # stopped in the middle of the training notebook
    assert not (root / "runs" / "study" / NAME / "done.json").exists()
    assert not (root / "results" / f"{NAME}.json").exists()

    resumed = study(notebooks, root)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    after = finished(root)
    assert {p: after[p] for p in before} == before  # the same files, the same bytes
    events = [json.loads(line) for line in (root / "runs" / "study" / NAME / "progress.jsonl").open()]
    assert sum(e.get("skipped", False) for e in events) == len(before)  # none of them trained again
    assert sum(e["event"] == "run" and not e["skipped"] for e in events) == RUNS - len(before)
    assert without_timings(root) == without_timings(reference)
    result = (root / "results" / f"{NAME}.json").read_bytes()
    assert result == (reference / "results" / f"{NAME}.json").read_bytes()


# ---- results writes that fail half-way ----------------------------------------------------------------


class HalfWriter:
    """A file that takes half of what is written, then reports the disk full."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, text):
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def _fail_half_way(monkeypatch):
    real = os.fdopen
    monkeypatch.setattr(io.os, "fdopen", lambda *a, **k: HalfWriter(real(*a, **k)))


def _fail_fsync(monkeypatch):
    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O")))


def _fail_replace(monkeypatch):
    monkeypatch.setattr(
        io.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )


FAILURES = [_fail_half_way, _fail_fsync, _fail_replace]


@pytest.mark.parametrize("fail", FAILURES)
def test_a_failed_results_write_keeps_the_previous_file_and_no_temporary(monkeypatch, tmp_path, fail):
    path = tmp_path / "results" / "03_dpo_robustness.json"
    atomic_write_json(path, {"runs": [1, 2, 3]})
    previous = path.read_bytes()
    fail(monkeypatch)
    with pytest.raises(OSError):
        atomic_write_json(path, {"runs": [1, 2, 3, 4] * 1000})
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "results" / "new.txt", "x" * 10_000)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary, no new file


@pytest.mark.parametrize("fail", FAILURES)
def test_a_run_whose_metrics_write_fails_stays_unfinished_and_trains_again(monkeypatch, tmp_path, fail):
    from dataclasses import dataclass

    @dataclass
    class Config:
        seed: int = 0

    out = tmp_path / "run-s0"
    calls = []

    def train(config):
        assert not (out / METRICS_FILE).exists()  # metrics.json appears only once the run finished
        calls.append(config)
        return {"per_domain": {}}

    with monkeypatch.context() as patch:
        fail(patch)
        with pytest.raises(OSError):
            run_or_resume(Config(), out, train)
    assert not (out / METRICS_FILE).exists() and finished_run(out, {"seed": 0}) is None
    assert not out.exists() or list(out.iterdir()) == []  # not even a temporary file
    first = run_or_resume(Config(), out, train)  # the rerun trains it again and records it
    assert len(calls) == 2 and finished_run(out, {"seed": 0}) == first
    assert run_or_resume(Config(), out, train) == first and len(calls) == 2  # now finished: skipped


def test_an_atomic_write_syncs_a_temporary_in_the_same_folder_then_renames_it(monkeypatch, tmp_path):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(io.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        io.os, "replace", lambda a, b: calls.append((Path(a), Path(b))) or real_replace(a, b)
    )
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert calls[0] == "fsync"  # the data is on disk before the name points to it
    temporary, target = calls[1]
    assert temporary.parent == tmp_path and target == tmp_path / "metrics.json"  # a rename, not a copy
    assert calls[2:] == ["fsync"]  # then the folder, so that the rename survives a power cut
    assert target.read_text() == "{}" and not temporary.exists()
