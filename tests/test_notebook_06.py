"""Notebook 06 end to end (SMOKE: tiny models, 2 paired seeds, two capacity points per stage): every stage's
runs are compared with ordinary training at their own capacity point, the comparisons CSV and the record
hold them, the gains figure is saved, and the findings state one primary line per stage (and split), written
from the run's numbers. The notebook runs on its own, outside `make study`."""

import json

import pandas as pd
import pytest

from drostudy.analysis import stats
from drostudy.analysis.capacity import split_stage
from drostudy.analysis.records import read_record
from drostudy.runner.notebooks import displayed_markdown, execute_notebook, notebooks_dir
from drostudy.runner.study import runs_in_the_study

NOTEBOOK = notebooks_dir() / "06_capacity.ipynb"


def test_notebook_06_is_left_out_of_the_study():
    assert not runs_in_the_study(NOTEBOOK)
    assert json.loads(NOTEBOOK.read_text())["metadata"]["drostudy"] == {"study": "own"}


@pytest.mark.slow  # kernel start and about forty tiny runs of three stages
def test_notebook_06_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    execute_notebook(NOTEBOOK, out, {"SMOKE": True}, env=notebook_env, progress_bar=False)

    record = read_record(tmp_path / "results" / "06_capacity.json")
    assert record["stages"] == ["reward", "dpo", "testbed"]
    written = pd.read_csv(tmp_path / "results" / "06_capacity.comparisons.csv")
    assert tuple(written.columns) == stats.COLUMNS and set(written.baseline) == {"ordinary"}
    points = {}
    for stage in written.stage:
        base, capacity = split_stage(stage)
        points.setdefault(base, set()).add(capacity)
    assert set(points) == {"rm A", "rm C", "dpo", "rl_testbed"}
    assert all(len(p) == 2 for p in points.values())  # SMOKE's two capacity points per stage
    gains = pd.DataFrame(record["gains"])
    assert set(gains.stage) == set(points) and (gains.n_seeds == 2).all()
    assert {"tv 0.5", "tv 0.2"} <= set(gains.setting)
    assert "comparisons" not in record  # the CSV holds them; a stage run alone carries them from there
    travelled = pd.DataFrame(record["kl_travelled"])  # DPO's KL to the reference at each point
    assert {split_stage(s)[1] for s in travelled.stage} == points["dpo"]
    assert set(travelled.setting) == {"ordinary", "tv 0.2", "group_eg"} and len(travelled) == 6
    assert (travelled.kl_ood >= 0).all() and "KL to the reference out of distribution" in record[
        "conclusion"
    ]
    for run in record["stage_runs"].values():  # the training time of the runs, as each was trained
        assert 0 < run["run_seconds"] <= run["seconds"]

    findings = displayed_markdown(out)[-1]
    assert findings.startswith("### What was found")
    primaries = [line for line in record["conclusion"].splitlines() if line.startswith("Primary: ")]
    # one per stage, the reward models' on both splits, as the notebook's first cell names them
    assert len(primaries) == len(points) and set(record["primary"]) == set(points)
    for line in record["conclusion"].splitlines():
        assert line in findings
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    assert "06_capacity_gains.html" in figures

    # a stage at a time: the testbed alone again (its finished runs resume), the other stages carried whole
    again = tmp_path / "again.ipynb"
    params = {"SMOKE": True, "STAGES": "testbed"}
    execute_notebook(NOTEBOOK, again, params, env=notebook_env, progress_bar=False)
    second = read_record(tmp_path / "results" / "06_capacity.json")
    assert second["stages"] == ["testbed"]
    assert set(second["stage_runs"]) == {"reward", "dpo", "testbed"}
    for stage in ("reward", "dpo"):
        assert second["stage_runs"][stage] == record["stage_runs"][stage]
    assert second["kl_travelled"] == record["kl_travelled"]  # carried with DPO's rows
    resumed = second["stage_runs"]["testbed"]  # every run resumed: cheap now, the same training time
    assert resumed["run_seconds"] == pytest.approx(record["stage_runs"]["testbed"]["run_seconds"])
    rewritten = pd.read_csv(tmp_path / "results" / "06_capacity.comparisons.csv")
    key = ["stage", "setting", "split", "domain", "metric"]
    pd.testing.assert_frame_equal(
        rewritten.sort_values(key).reset_index(drop=True),
        written.sort_values(key).reset_index(drop=True),
    )
    assert "reward: " in second["conclusion"] and "an earlier run (" in second["conclusion"]
