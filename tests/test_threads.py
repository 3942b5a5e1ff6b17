"""Threads per process: several workers share the cores, one keeps them all, the user's setting wins."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import drostudy
from drostudy.runner import tasks as runner_tasks
from drostudy.runner.tasks import Task, run_tasks
from drostudy.threads import (
    THREAD_VARIABLES,
    available_cores,
    describe_threads,
    thread_share,
    torch_threads,
    worker_thread_env,
)


@pytest.mark.parametrize(("workers", "cores", "share"), [(1, 8, 8), (2, 2, 1), (3, 8, 2), (4, 2, 1)])
def test_thread_share_divides_the_cores_and_keeps_one(workers, cores, share):
    assert thread_share(workers, cores) == share


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_thread_share_refuses_a_bad_worker_count(workers):
    with pytest.raises(ValueError, match="workers must be an integer >= 1"):
        thread_share(workers)


def test_worker_thread_env_shares_only_between_several_workers_the_user_did_not_configure():
    share = str(thread_share(3))
    assert worker_thread_env(3, {}) == dict.fromkeys(THREAD_VARIABLES, share)
    assert worker_thread_env(1, {}) == {}  # a single process keeps all cores
    for name in THREAD_VARIABLES:  # any one of them set by the user: none is touched
        assert worker_thread_env(3, {name: "4"}) == {}
    assert "OMP_NUM_THREADS=4" in describe_threads(3, {"OMP_NUM_THREADS": "4"})
    assert describe_threads(1, {}).startswith(f"threads per process: {available_cores()} (all")


def test_a_child_process_runs_torch_with_its_share():
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    code = "import torch; print(torch.get_num_threads())"
    for workers in (1, 2):
        env = {**clean, **worker_thread_env(workers, clean)}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert int(out.stdout) == thread_share(workers)


def test_run_tasks_gives_side_by_side_runs_their_share(monkeypatch, tmp_path):
    seen = {}

    def fake_run_task(task, timeout=None, env=None, monitor=None):
        seen[task.run_dir.name] = env
        return {"run_id": task.run_dir.name, "status": "ok"}

    monkeypatch.setattr(runner_tasks, "run_task", fake_run_task)
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    tasks = [Task("command", "rm", {"seed": s}, tmp_path / f"seed={s}") for s in (0, 1)]
    run_tasks(tasks, workers=2, env_of=lambda t: {"EXTRA": t.run_dir.name})
    share = str(thread_share(2))
    for task in tasks:
        assert seen[task.run_dir.name] == {
            **dict.fromkeys(THREAD_VARIABLES, share),
            "EXTRA": task.run_dir.name,
        }
    run_tasks(tasks[:1], workers=2)  # one run left: it runs alone, with all cores
    assert seen["seed=0"] == {}
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's setting wins
    run_tasks(tasks, workers=2)
    assert all(env == {} for env in seen.values())


def test_torch_threads_sets_and_restores():
    previous = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == previous
    with torch_threads(None):
        assert torch.get_num_threads() == previous
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == previous


THREAD_SETTERS = ("set_num_threads", "set_num_interop_threads")


def docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions."""
    scopes = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    bodies = [tree, *(n for n in ast.walk(tree) if isinstance(n, scopes))]
    return {
        id(body.body[0].value)
        for body in bodies
        if body.body
        and isinstance(body.body[0], ast.Expr)
        and isinstance(body.body[0].value, ast.Constant)
    }


def thread_setting(source: str) -> list[str]:
    """Where `source` sets thread counts itself, in line order: a call of torch's set_num_threads (or the
    interop one), or a thread variable named in code (an environment entry written, or handed to a child
    process)."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in THREAD_SETTERS:
                found.append((node.lineno, f"{name}()"))
            found += [(node.lineno, f"{k.arg}=") for k in node.keywords if k.arg in THREAD_VARIABLES]
        elif isinstance(node, ast.Constant) and node.value in THREAD_VARIABLES and id(node) not in skip:
            found.append((node.lineno, repr(node.value)))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_thread_setting_is_found():
    """The scan below sees each way of setting threads (so an empty result means something)."""
    source = '''"""Docstrings may name OMP_NUM_THREADS."""
import os, torch
torch.set_num_threads(1)
os.environ["MKL_NUM_THREADS"] = "1"
env = dict(OMP_NUM_THREADS="1")
'''
    assert thread_setting(source) == [
        "line 3: set_num_threads()",
        "line 4: 'MKL_NUM_THREADS'",
        "line 5: OMP_NUM_THREADS=",
    ]


def test_no_other_thread_limiter_in_the_package():
    """One place sets thread counts (drostudy.threads: torch's threads and the thread variables of the
    processes it starts); a second copy would drift from it. Scans the whole package."""
    package = Path(drostudy.__file__).parent
    offenders = {
        str(path.relative_to(package.parent)): found
        for path in sorted(package.rglob("*.py"))
        if path != package / "threads.py" and (found := thread_setting(path.read_text()))
    }
    assert offenders == {}
