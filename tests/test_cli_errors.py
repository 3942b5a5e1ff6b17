"""Bad command-line values end in one `drostudy COMMAND: error: ...` line and exit status 2, before any
model or data loads; an unexpected error keeps its traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drostudy.__main__ import main

REPO = Path(__file__).resolve().parents[1]
# Runs `python -m drostudy ARGS` with every model and suite loader replaced, as its module is imported, by
# one that fails loudly: a command that loads anything before checking its values cannot pass. Patched at
# import, not imported up front, so that data, sweep and study do not pay for importing torch here.
GUARDED_ENTRY = """
import importlib.abc, importlib.util, runpy, sys

GUARDED = {"drostudy.models": ("load_policy", "load_reward_model"), "drostudy.data.suite": ("load_suite",)}

def forbidden(*args, **kwargs):
    sys.exit("LOADED A MODEL OR THE SUITE BEFORE THE VALUES WERE CHECKED")

class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in GUARDED:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for loader_name in GUARDED[name]:
                setattr(module, loader_name, forbidden)

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Guard())
sys.argv[0] = "drostudy"
runpy.run_module("drostudy", run_name="__main__", alter_sys=True)
"""
# The same guard around several commands in one process (importing torch once instead of once per case):
# argv[1] is a JSON list of argument lists; prints a JSON list of [exit status, stderr] per command.
GUARDED_BATCH = GUARDED_ENTRY.replace(
    """sys.argv[0] = "drostudy"
runpy.run_module("drostudy", run_name="__main__", alter_sys=True)
""",
    """import contextlib, io, json
results = []
for args in json.loads(sys.argv[1]):
    sys.argv[:] = ["drostudy", *args]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            runpy.run_module("drostudy", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
    results.append([status, err.getvalue()])
print(json.dumps(results))
""",
)
assert GUARDED_BATCH != GUARDED_ENTRY  # the replaced lines are still those of GUARDED_ENTRY

CASES = {
    "rm tv radius below 0": (["rm", "--divergence", "tv", "--radius", "-1"], "radius"),
    "rm unknown divergence": (["rm", "--divergence", "wasserstein", "--radius", "0.1"], "divergence"),
    "rm unknown domain": (["rm", "--train-domains", "math,poetry"], "poetry"),
    "dpo tv radius above 1": (["dpo", "--loss", "robust", "--radius", "1.5"], "radius"),
    "dpo unknown loss": (["dpo", "--loss", "hinge"], "loss"),
    "rl cvar alpha 0": (
        ["rl", "--divergence", "cvar", "--radius", "0", "--reward-model", "tiny-bert"],
        "cvar",
    ),
    "data unknown domain": (["data", "build", "--domains", "math,poetry"], "poetry"),
    "sweep unknown notebook": (["sweep", "--notebook", "notebooks/02_nope.ipynb"], "02_nope"),
    "sweep unknown notebook parameter": (
        ["sweep", "--notebook", "notebooks/02_reward_model_robustness.ipynb", "--param", "RAD=0,1"],
        "RAD",
    ),
    "sweep malformed param": (["sweep", "--grid", "default", "--param", "radius"], "NAME=VALUE"),
    "sweep bad radius in grid": (
        ["sweep", "--command", "rm", "--param", "divergence=tv", "--param", "radius=0,2"],
        "radius",
    ),
    "sweep workers 0": (["sweep", "--grid", "default", "--workers", "0"], "--workers"),
    "sweep unknown grid": (["sweep", "--grid", "huge"], "huge"),
    "study unknown notebook number": (["study", "--only", "02,09"], "09"),
    "study timeout 0": (["study", "--timeout", "0"], "--timeout"),
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{case: (exit status, stderr, its run folder)} of every case, all run in one guarded process."""
    root = tmp_path_factory.mktemp("cli")
    argv, folders = [], {}
    for i, (case, (args, _)) in enumerate(CASES.items()):
        folders[case] = root / f"case{i}"
        folders[case].mkdir()
        if args[0] in ("rm", "dpo", "rl"):
            args = [*args, "--out", str(folders[case] / "run")]
        if args[0] in ("sweep", "study"):
            args = [*args, "--runs-dir", str(folders[case] / "runs")]
        argv.append(args)
    proc = subprocess.run(
        [sys.executable, "-c", GUARDED_BATCH, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,  # the notebook paths above are relative to the repository, as a user types them
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {case: (*results[i], folders[case]) for i, case in enumerate(CASES)}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_value_is_one_error_line_and_status_2(case, outcomes):
    args, named = CASES[case]
    command = args[0]
    status, stderr, folder = outcomes[case]
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"drostudy {command}: error: ") and named in lines[0], lines[0]
    assert not list(folder.iterdir())  # no run folder, no sweep folder: nothing started


def test_a_bad_value_in_a_fresh_process_is_one_line_too(tmp_path):
    """One case in a process of its own: nothing printed at import time adds to the error line."""
    args = ["dpo", "--loss", "hinge", "--out", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-c", GUARDED_ENTRY, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("drostudy dpo: error: ") and "loss" in proc.stderr


def test_unexpected_error_keeps_its_traceback(monkeypatch):
    """A ValueError raised while the command runs (not while its values are checked) is not a usage error."""
    import drostudy.data.suite

    def broken(**kwargs):
        raise ValueError("a bug deep inside, not a bad value")

    monkeypatch.setattr(drostudy.data.suite, "load_suite", broken)
    with pytest.raises(ValueError, match="a bug deep inside"):
        main(["data", "build"])


def test_guard_catches_a_load(tmp_path):
    """The guard above works: a command that gets to its model load is stopped there (with a tiny model)."""
    args = ["rm", "--model", "tiny-bert", "--n-train", "16", "--out", str(tmp_path / "run")]
    proc = subprocess.run(
        [sys.executable, "-c", GUARDED_ENTRY, *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1 and "LOADED A MODEL" in proc.stderr


def test_usage_error_in_process_returns_2(capsys):
    assert main(["study", "--only", "09"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("drostudy study: error: --only: unknown notebook number(s) ['09']")
    assert err.count("\n") == 1
