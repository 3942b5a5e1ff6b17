"""scripts/gpu_study.sh --dry-run: the commands it would run on a GPU machine (no GPU is needed to check them)."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_study.sh"


def dry_run(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, env=env
    )


def test_dry_run_prints_both_full_notebooks_within_ten_minutes():
    done = dry_run()
    assert done.returncode == 0, done.stderr
    commands = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert "torch.cuda.is_available()" in commands[1]  # stops without a GPU, before any notebook
    notebooks = [c for c in commands if "drostudy.runner.notebooks" in c]
    assert [re.search(r"notebooks/(\d\d)_", c)[1] for c in notebooks] == ["04", "03"]
    assert all('--parameters {"FULL": true}' in c and sys.executable in c for c in notebooks)
    limits = [int(re.search(r"--kill-after=(\d+) (\d+) ", c)[2]) for c in notebooks]
    kill_after = [int(re.search(r"--kill-after=(\d+)", c)[1]) for c in notebooks]
    assert sum(limits) + sum(kill_after) <= 600  # the grace included


def test_dry_run_only_one_notebook_and_bad_arguments():
    done = dry_run("--only", "04", "--minutes", "5")
    assert done.returncode == 0 and "03_dpo" not in done.stdout and " 280 " in done.stdout
    for bad in (("--only", "05"), ("--minutes", "ten"), ("--bogus",)):
        done = dry_run(*bad)
        assert done.returncode == 2 and "gpu_study.sh:" in done.stderr
