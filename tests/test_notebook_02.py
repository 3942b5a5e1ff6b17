"""Notebook 02 end to end (SMOKE, tiny BERT): it runs, saves its figures, records sane results and prints
its conclusion."""

import json

import pytest

from drostudy.runner.notebooks import execute_notebook, notebooks_dir, printed_text

pytestmark = pytest.mark.slow  # kernel start, the suite, a dozen tiny runs
NOTEBOOK = notebooks_dir() / "02_reward_model_robustness.ipynb"
BATCH = 16


def test_notebook_02_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "RADIUS": 0.3, "BATCH_SIZE": BATCH}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = json.loads((tmp_path / "results" / "02_reward_model_robustness.json").read_text())
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    labels = {run["label"] for run in record["runs"]}
    cvar = record["matched_radii"]["cvar"]
    assert (
        1 / BATCH <= cvar < 1
    )  # a real tail fraction, found by matching tv 0.3's effective sample size
    expected = {"ordinary", "robust tv 0.3", "group_robust tv 0.3", f"robust cvar {cvar:g}"}
    assert expected | {"ordinary_filtered", "robust_filtered tv 0.3"} == labels
    assert len(record["runs"]) == 2 * len(labels)  # SMOKE: two seeds per setting
    for run in record["runs"]:
        assert set(run["per_domain"]) == {"math", "code", "reasoning", "knowledge", "safety"}
        assert all(0 <= d["accuracy"] <= 1 for d in run["per_domain"].values())
        max_weight = max(row["dro/max_weight"] for row in run["history"])
        if run["label"].startswith("ordinary"):
            assert max_weight == pytest.approx(1 / BATCH)
        else:
            assert max_weight > 1 / BATCH  # the worst case moved mass
        kind_mass = sum(v for k, v in run["history"][0].items() if k.startswith("dro/kind_mass/"))
        assert kind_mass == pytest.approx(1.0)
    filtered = [
        r for r in record["runs"] if r["label"].endswith("filtered") or "filtered " in r["label"]
    ]
    assert all(record["filtered_kind"] not in r["config"]["train_kinds"] for r in filtered)

    printed = printed_text(out)
    assert record["conclusion"] and record["conclusion"] in printed
    assert "Ordinary training: OOD accuracy" in record["conclusion"]
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("accuracy", "radius", "weights"):
        assert f"02_reward_model_robustness_{what}.html" in figures
