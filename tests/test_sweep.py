"""The sweep runner on a throwaway notebook: failures are kept and isolated, reruns redo only what is missing."""

import json
import sys

import nbformat
import pandas as pd
import pytest

from drostudy.__main__ import main
from drostudy.sweep import expand_grid, parse_param, run_id

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


@pytest.fixture
def toy(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("x = 1\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), params, nbformat.v4.new_code_cell(BODY)]
    path = tmp_path / "99_toy.ipynb"
    nbformat.write(nb, path)
    (tmp_path / "counts").mkdir()
    flag = tmp_path / "fail.flag"
    flag.write_text("")
    monkeypatch.setenv("SWEEP_COUNTER_DIR", str(tmp_path / "counts"))
    monkeypatch.setenv("SWEEP_FAIL_FLAG", str(flag))
    return path


def sweep(toy, *extra):
    argv = ["sweep", "--notebook", str(toy), "--param", "x=1,2", "--param", "seed=0,1", "--workers", "2"]
    return main([*argv, "--name", "toy", "--runs-dir", str(toy.parent / "runs"), *extra])


def counts(toy):
    return {p.name: len(p.read_text().splitlines()) for p in (toy.parent / "counts").iterdir()}


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


def test_bad_grid_values_name_the_parameter(toy):
    runs = ["--runs-dir", str(toy.parent / "runs")]
    with pytest.raises(ValueError, match="'x'"):
        main(["sweep", "--notebook", str(toy), "--param", "x=1,abc", *runs])
    with pytest.raises(ValueError, match="'x'"):
        sweep(toy, "--param", "x=3")  # given twice
    with pytest.raises(ValueError, match="'y'"):
        main(["sweep", "--notebook", str(toy), "--param", "y=1", *runs])
    with pytest.raises(ValueError, match="'nope'"):
        main(["sweep", "--command", "nope", "--param", "radius=0"])
    assert not (toy.parent / "runs").exists()  # nothing ran


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
    ok = nbformat.read(runs / "seed=0,x=1" / "99_toy.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in ok.cells for o in c.get("outputs", []))
    assert f"PREFIX={sys.prefix}" in printed
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
