"""Notebook 01 end to end (SMOKE): it runs, saves its figures, records sane results and shows its conclusion as Markdown."""

import json

import pytest

from drostudy.runner.notebooks import displayed_markdown, execute_notebook, notebooks_dir

pytestmark = pytest.mark.slow  # about 30 s: kernel start, widgets, three cvxpy solves
NOTEBOOK = notebooks_dir() / "01_worst_case_weights.ipynb"


def test_notebook_01_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "RADIUS": 0.3, "N_EXAMPLES": 40, "SEED": 1}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = json.loads((tmp_path / "results" / "01_worst_case_weights.json").read_text())
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    weights = record["weights"]
    # tv at radius 0.3 moves 0.3 of the mass onto the (single) largest loss: 1/n + 0.3 = (1 + 0.3 n) / n
    assert weights["max_weight_times_n"] == pytest.approx(1 + 0.3 * 40)
    assert weights["mean_loss"] < weights["robust_value"] and 0 < weights["ess_fraction"] < 1
    tv = record["convergence"]["tv"]
    assert set(tv["final_gap"]) == {str(b) for b in record["convergence"]["batch_sizes"]}
    assert all(gap > -1e-6 for gap in tv["final_gap"].values())  # F* is a minimum
    shift = record["domain_shift"]
    assert shift["shift_divergence"] <= 0.3 + 1e-9 and shift["shifted_mix"] != shift["nominal_mix"]
    assert sum(shift["shifted_mix"]) == pytest.approx(1.0)
    assert set(shift["shifted_loss"]) == {"ordinary", "robust", "group"}

    assert record["conclusion"] and record["conclusion"] in displayed_markdown(out)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("weights", "value", "ess", "gap", "floor", "shift"):
        assert f"01_worst_case_weights_{what}.html" in figures
    assert "plotly.min.js" in figures
