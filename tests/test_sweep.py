"""The sweep runner on a throwaway notebook: failures are kept and isolated, reruns redo only what is missing."""

import json
import sys

import pandas as pd
import pytest

from drostudy.__main__ import main
from drostudy.runner.grid import expand_grid, parse_param, run_id

BODY = """
import json, os, pathlib, sys
if x == 2 and seed == 1 and pathlib.Path(os.environ["SWEEP_FAIL_FLAG"]).exists():
    raise RuntimeError("made to fail: x=2, seed=1")
with open(pathlib.Path(os.environ["SWEEP_COUNTER_DIR"]) / f"x{x}_seed{seed}", "a") as f:
    f.write("ran\\n")
out = pathlib.Path(os.environ["DROSTUDY_RESULTS"]) / "99_toy.json"
out.parent.mkdir(parents=True, exist_ok=True)
metrics = {"stage": "toy", "method": "ordinary", "config": {"seed": seed, "train_domains": ["a"]},
           "per_domain": {"a": {"accuracy": x / 10}}}
out.write_text(json.dumps({"runs": [metrics]}))
print("PREFIX=" + sys.prefix)
"""


def cell(source, tags=()):
    return {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": list(tags)},
        "outputs": [],
        "source": source,
    }


def write_notebook(path, parameters, body):
    """A notebook (nbformat 4 JSON, written by hand: importing nbformat costs seconds) with a markdown
    title, an optional `parameters` cell, and one code cell."""
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# toy"}]
    cells += [cell(parameters, ["parameters"])] if parameters else []
    nb = {"cells": [*cells, cell(body)], "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    path.write_text(json.dumps(nb))
    return path


def printed(path):
    """Everything the executed notebook at `path` printed."""
    outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
    return "".join("".join(o.get("text", "")) for o in outputs)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    path = write_notebook(tmp_path / "99_toy.ipynb", "x = 1\nseed = 0", BODY)
    (tmp_path / "counts").mkdir()
    flag = tmp_path / "fail.flag"
    flag.write_text("")
    monkeypatch.setenv("SWEEP_COUNTER_DIR", str(tmp_path / "counts"))
    monkeypatch.setenv("SWEEP_FAIL_FLAG", str(flag))
    return path


def sweep(toy, *extra):
    argv = ["sweep", "--notebook", str(toy), "--param", "x=1,2", "--param", "seed=0,1", "--workers", "2"]
    return main([*argv, "--name", "toy", "--runs-dir", str(toy.parent / "runs"), *extra])


def counts(inside):
    """How often each toy run wrote its counter line (the counters sit beside the notebooks' folder)."""
    return {p.name: len(p.read_text().splitlines()) for p in (inside.parent / "counts").iterdir()}


def test_grid_parsing_and_run_ids():
    assert parse_param("radius=0,0.1, 0.2") == ("radius", [0, 0.1, 0.2])
    assert parse_param("divergence=tv,cvar")[1] == ["tv", "cvar"]
    assert parse_param("flag=true,False")[1] == [True, False]
    for bad, name in [("radius", "radius"), ("radius=", "radius"), ("r=1,1", "r"), ("2x=1", "2x")]:
        with pytest.raises(ValueError, match=name):
            parse_param(bad)
    grid = expand_grid([{"d": ["tv"], "r": [0, 0.1]}, {"d": ["cvar"], "r": [0.5]}])
    assert grid == [{"d": "tv", "r": 0}, {"d": "tv", "r": 0.1}, {"d": "cvar", "r": 0.5}]
    assert run_id({"seed": 0, "radius": 0.1, "divergence": "tv"}) == "divergence=tv,radius=0.1,seed=0"


def test_bad_grid_values_name_the_parameter(toy, capsys):
    runs = ["--runs-dir", str(toy.parent / "runs")]
    bad = [
        (["--notebook", str(toy), "--param", "x=1,abc", *runs], "'x'"),
        (["--notebook", str(toy), "--param", "x=1", "--param", "x=3", *runs], "'x'"),  # given twice
        (["--notebook", str(toy), "--param", "y=1", *runs], "'y'"),
        (["--command", "nope", "--param", "radius=0"], "'nope'"),
    ]
    for argv, named in bad:
        assert main(["sweep", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("drostudy sweep: error: ") and named in err and err.count("\n") == 1
    assert not (toy.parent / "runs").exists()  # nothing ran


@pytest.mark.slow
def test_sweep_isolates_failures_and_resumes(toy, capsys):
    runs = toy.parent / "runs" / "toy"
    failed = runs / "seed=1,x=2"
    assert sweep(toy) == 1  # one run failed: non-zero, after all ran
    assert counts(toy) == {"x1_seed0": 1, "x1_seed1": 1, "x2_seed0": 1}
    assert "made to fail" in (failed / "error.txt").read_text()
    executed = json.loads((failed / "99_toy.ipynb").read_text())
    assert any(o.get("ename") == "RuntimeError" for c in executed["cells"] for o in c.get("outputs", []))
    assert not (failed / "done.json").exists() and (runs / "seed=0,x=2" / "done.json").exists()
    assert json.loads((failed / "params.json").read_text()) == {"x": 2, "seed": 1}
    # the kernel ran in this interpreter's environment, and saw the run's own DROSTUDY_RESULTS
    assert f"PREFIX={sys.prefix}" in printed(runs / "seed=0,x=1" / "99_toy.ipynb")
    assert "overhead" in capsys.readouterr().out

    table = pd.read_parquet(runs / "results.parquet")
    assert len(table) == 4 and len(pd.read_csv(runs / "results.csv")) == 4
    by_run = table.set_index("run_id")
    assert by_run.loc["seed=1,x=2", "status"] == "failed" and pd.isna(by_run.loc["seed=1,x=2", "value"])
    assert by_run.loc["seed=1,x=1", "value"] == pytest.approx(0.1)
    assert by_run.loc["seed=0,x=2", "value"] == pytest.approx(0.2)
    assert (by_run["x"] == [int(r.split("x=")[1]) for r in by_run.index]).all()

    (toy.parent / "fail.flag").unlink()  # fix the cause, rerun: only the failed run runs again
    assert sweep(toy) == 0
    assert counts(toy) == {"x1_seed0": 1, "x1_seed1": 1, "x2_seed0": 1, "x2_seed1": 1}
    assert not (failed / "error.txt").exists()

    (runs / "seed=0,x=1" / "done.json").unlink()  # an interrupted run: its marker was never written
    assert sweep(toy) == 0
    assert counts(toy) == {"x1_seed0": 2, "x1_seed1": 1, "x2_seed0": 1, "x2_seed1": 1}
    table = pd.read_parquet(runs / "results.parquet")
    assert (table["status"] == "ok").all() and len(table) == 4


FIRST = """
import json, os, pathlib
pathlib.Path(os.environ["SWEEP_COUNTER_DIR"], "01").open("a").write("ran\\n")
results = pathlib.Path(os.environ["DROSTUDY_RESULTS"])
(results / "01_first.json").write_text(json.dumps({"full": FULL, "smoke": SMOKE}))
"""
SECOND = """
import json, os, pathlib
pathlib.Path(os.environ["SWEEP_COUNTER_DIR"], "02").open("a").write("ran\\n")
if json.loads((pathlib.Path(os.environ["DROSTUDY_RESULTS"]) / "01_first.json").read_text())["full"]:
    raise RuntimeError("02 fails on FULL results")
"""

THIRD = """
import os, pathlib
pathlib.Path(os.environ["SWEEP_COUNTER_DIR"], "03").open("a").write("ran\\n")
"""


@pytest.mark.slow
def test_study_runs_in_order_passes_only_defined_parameters_and_resumes(tmp_path, monkeypatch, capsys):
    nbs, results, runs = tmp_path / "nbs", tmp_path / "results", tmp_path / "runs"
    nbs.mkdir(), results.mkdir(), (tmp_path / "counts").mkdir()
    write_notebook(nbs / "01_first.ipynb", "FULL = False  # GPU size\nSMOKE = False", FIRST)
    write_notebook(nbs / "02_second.ipynb", None, SECOND)  # no parameters cell: gets none
    write_notebook(nbs / "notes.ipynb", None, "raise RuntimeError('not numbered: never run')")
    write_notebook(nbs / "03_own.ipynb", None, THIRD)  # runs on its own: only when --only names it
    own = json.loads((nbs / "03_own.ipynb").read_text())
    own["metadata"]["drostudy"] = {"study": "own"}
    (nbs / "03_own.ipynb").write_text(json.dumps(own))
    monkeypatch.setenv("SWEEP_COUNTER_DIR", str(tmp_path / "counts"))
    monkeypatch.setenv("DROSTUDY_RESULTS", str(results))
    study = ["study", "--notebooks", str(nbs), "--runs-dir", str(runs)]

    assert main([*study, "--smoke"]) == 0
    assert counts(nbs) == {"01": 1, "02": 1}
    assert json.loads((runs / "study" / "01_first" / "params.json").read_text()) == {
        "FULL": False,
        "SMOKE": True,
    }
    assert json.loads((runs / "study" / "02_second" / "params.json").read_text()) == {}
    assert (runs / "study" / "02_second" / "02_second.ipynb").exists()
    assert main([*study, "--smoke"]) == 0  # finished, same parameters and inputs: both skipped
    assert counts(nbs) == {"01": 1, "02": 1}
    assert "skipped" in capsys.readouterr().out

    # FULL changes 01's parameters, 01's new results make 02 run again; 02 then fails: non-zero exit
    assert main([*study, "--smoke", "--full", "1"]) == 1
    assert counts(nbs) == {"01": 2, "02": 2}
    assert "02 fails on FULL" in (runs / "study" / "02_second" / "error.txt").read_text()
    assert "FAILED 02_second" in capsys.readouterr().out
    assert "03" not in counts(nbs)  # never run by the study itself
    assert main([*study, "--smoke", "--only", "03"]) == 0
    assert counts(nbs)["03"] == 1 and counts(nbs)["02"] == 2


def test_study_params_reach_only_the_notebooks_that_define_them(tmp_path):
    from drostudy.runner.study import extra_parameters, study_parameters

    own = write_notebook(tmp_path / "06_own.ipynb", 'SMOKE = False\nSTAGES = "a,b,c"', "pass")
    plain = write_notebook(tmp_path / "01_plain.ipynb", "SMOKE = False", "pass")
    extra = extra_parameters(["STAGES=b,c", "SMOKE=true"], [own, plain])
    assert extra == {"STAGES": "b,c", "SMOKE": True}  # the value whole, commas included
    assert study_parameters(own, False, False, extra) == {"SMOKE": True, "STAGES": "b,c"}
    assert study_parameters(plain, False, False, extra) == {"SMOKE": True}
    with pytest.raises(ValueError, match=r"\['STAGE'\] defined by none of the chosen notebooks"):
        extra_parameters(["STAGE=b"], [own, plain])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        extra_parameters(["STAGES"], [own])
