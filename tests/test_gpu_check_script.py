"""scripts/gpu_check.sh --dry-run (the commands it would run on the lent GPU machine) and its wheel list: every
requirement of every wheel in scripts/gpu_wheels.txt is met by the list or by the machine. Repository files
only (the wheels' requirements are committed in scripts/gpu_wheels.requires.txt by scripts/gpu_wheels.sh)."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _requires_module():
    spec = importlib.util.spec_from_file_location("gpu_requires", ROOT / "scripts" / "gpu_requires.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_requires = _requires_module()


def dry_run(*args: str, out: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "GPU_CHECK_DIR": "/tmp/gc"}
    if out is not None:
        env["OUT"] = out
    return subprocess.run(
        ["bash", str(SCRIPT), *args, "--dry-run"], capture_output=True, text=True, env=env, cwd=ROOT
    )


def commands(done: subprocess.CompletedProcess) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_installs_the_wheels_offline_into_a_target_and_runs_the_gpu_tests():
    done = dry_run("/wheels")
    assert done.returncode == 0, done.stderr
    cmds = commands(done)
    installs = [c for c in cmds if c[1:4] == ["-m", "pip", "install"]]
    assert len(installs) == 2
    for c in installs:
        assert c[0] == sys.executable
        assert {"--no-index", "--no-deps"} <= set(c)
        assert c[c.index("--find-links") + 1] == "/wheels"
        assert c[c.index("--target") + 1] == "/tmp/gc/site"
    runtime = [f"{name}=={version}" for name, version, build in gpu_requires.read_pins() if not build]
    assert [a for a in installs[0] if "==" in a] == runtime  # every runtime wheel, no build-only one
    assert "setuptools" not in " ".join(installs[0]) and installs[1][-1] == "."  # drostudy, working tree
    copy = next(c for c in cmds if c[0] == "cp")
    assert copy[-2:] == ["/wheels/tokenizers/smollm2-135m-instruct", "/tmp/gc/cache/tokenizers/"]
    assert any("torch.cuda.get_device_name(0)" in " ".join(c) for c in cmds)
    assert any(
        c[1:] == ["scripts/gpu_requires.py", "installed", ">", "/tmp/gc/requires.txt"] for c in cmds
    )
    (pytest_cmd,) = [c for c in cmds if "pytest" in c]
    assert pytest_cmd[:4] == ["timeout", "--signal=INT", "--kill-after=20", "300"]
    assert pytest_cmd[4:8] == [sys.executable, "-m", "pytest", "-m"] and pytest_cmd[8] == "gpu"
    files = [a for a in pytest_cmd if a.startswith("tests/")]
    assert "tests/test_gpu.py" in files and "tests/test_gpu_check_script.py" not in files
    assert pytest_cmd[-2:] == [">", "./gpu_check_pytest.log"]  # beside the default report
    assert cmds.index(installs[1]) < cmds.index(pytest_cmd)


def test_report_time_box_and_bad_arguments():
    done = dry_run("/wheels", "--report", "/r/rep.txt", "--time-box", "120")
    assert done.returncode == 0, done.stderr
    (pytest_cmd,) = [c for c in commands(done) if "pytest" in c]
    assert pytest_cmd[3] == "120" and pytest_cmd[-1] == "/r/rep.txt".replace(
        "rep.txt", "gpu_check_pytest.log"
    )
    done = dry_run("/wheels", out="/o")  # a device call's $OUT: the report comes back from there
    assert ["mkdir", "-p", "/tmp/gc/site", "/tmp/gc/cache/tokenizers", "/o"] in commands(done)
    assert commands(done)[-1][-1] == "/o/gpu_check_pytest.log"
    for bad in ((), ("/w", "--time-box", "ten"), ("/w", "--bogus"), ("/w", "/v")):
        done = dry_run(*bad)
        assert done.returncode == 2 and "gpu_check.sh:" in done.stderr, bad


def test_every_gpu_test_file_is_marked_and_collected_by_the_marker():
    """The script picks test files by their gpu mark; every test in them must carry it (else -m gpu drops it)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "gpu",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_gpu.py",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if line.startswith("tests/test_gpu.py::")]
    assert len(collected) >= 15 and re.search(r"(\d+) tests? collected", done.stdout)
    assert "deselected" not in done.stdout  # the whole file is gpu


def test_wheel_list_is_pinned_and_the_requires_file_matches_it():
    pins = gpu_requires.read_pins()
    requires = gpu_requires.read_requires()
    assert {(name, version) for name, version, _ in pins} == set(requires)  # regenerated with the list
    names = {name for name, _, _ in pins}
    assert {"trl", "datasets"} <= names and "cvxpy" not in names and "torch" not in names
    # pinned to what this project tests with
    pyproject = (ROOT / "pyproject.toml").read_text()
    for name in ("trl", "datasets"):
        version = next(v for n, v, _ in pins if n == name)
        assert f'"{name}=={version}"' in pyproject, name
    machine = gpu_requires.read_machine()
    runtime = {name for name, _, build_only in pins if not build_only}
    assert not runtime & set(machine), "a listed wheel would shadow the machine's own package"


def test_every_requirement_of_the_wheel_list_is_met():
    problems, unverified = gpu_requires.unmet(
        gpu_requires.read_requires(), gpu_requires.read_machine(), gpu_requires.machine_environment()
    )
    assert problems == []
    # the versions the notes do not give stay unverified here; gpu_check.sh checks them on the machine
    assert all("version not recorded" in line for line in unverified)


def test_the_check_finds_what_is_missing():
    requires = {
        ("trl", "1.16.0"): [
            "datasets>=4.7.0",
            "numpy>=3",
            "nosuchpkg",
            "deepspeed; extra == 'ds'",
            "oldpy; python_version < '3.10'",
        ],
        ("datasets", "4.0.0"): [],
    }
    machine = {canonicalize_name("numpy"): "2.5.2"}
    problems, _ = gpu_requires.unmet(requires, machine, gpu_requires.machine_environment())
    assert len(problems) == 3
    assert "the list pins datasets==4.0.0" in problems[0]
    assert "the machine has numpy==2.5.2" in problems[1]
    assert "nosuchpkg" in problems[2] and "neither listed nor on the machine" in problems[2]


def test_machine_list_is_the_notes_list():
    machine = gpu_requires.read_machine()
    assert machine["torch"] == "2.11.0" and machine["transformers"] == "5.17.0"
    assert {"pytest", "packaging", "peft", "accelerate", "pandas", "pyarrow"} <= set(machine)
    assert not {"trl", "datasets", "cvxpy", "plotly", "papermill"} & set(machine)
    text = (ROOT / "scripts" / "gpu_machine_packages.txt").read_text()
    assert "2026-11-17" in text and "notes/gpu.md" in text


@pytest.mark.parametrize("line", ["trl>=1.16", "trl==1.16.0  # build-only"])
def test_read_pins(tmp_path, line):
    path = tmp_path / "list.txt"
    path.write_text(f"# comment\n{line}\n")
    if ">=" in line:
        with pytest.raises(ValueError, match="not pinned"):
            gpu_requires.read_pins(path)
    else:
        assert gpu_requires.read_pins(path) == [("trl", "1.16.0", True)]
        assert Requirement("trl==1.16.0").name == "trl"
