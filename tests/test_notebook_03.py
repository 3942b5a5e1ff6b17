"""Notebook 03 end to end (SMOKE, tiny random Llama): every method runs through the TRL trainer, the figures
are saved, the results file holds sane per-domain numbers and the printed conclusion."""

import json

import pytest

from drostudy.runner.notebooks import execute_notebook, notebooks_dir, printed_text

pytestmark = pytest.mark.slow  # kernel start and eight tiny DPO runs
NOTEBOOK = notebooks_dir() / "03_dpo_robustness.ipynb"
METHODS = {"ordinary", "tv", "kl", "chi2", "dr_dpo", "kldpo", "group", "rdpo"}


def test_notebook_03_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "RADIUS_TV": 0.3, "TRAIN_DOMAINS": "math,code", "EVAL_DOMAINS": "reasoning"}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = json.loads((tmp_path / "results" / "03_dpo_robustness.json").read_text())
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    runs = record["runs"]
    assert {r["label"] for r in runs} == METHODS and len(runs) == len(METHODS)  # SMOKE: one seed
    for run in runs:
        assert run["stage"] == "dpo" and set(run["per_domain"]) == {"math", "code", "reasoning"}
        for values in run["per_domain"].values():
            assert 0 <= values["accuracy"] <= 1 and 0 <= values["correct"] <= 1 and values["kl"] >= 0
        assert len(run["history"]) == run["config"]["steps"]
    tv = next(r for r in runs if r["label"] == "tv")
    assert (tv["method"], tv["divergence"], tv["radius"]) == ("robust", "tv", 0.3)
    assert max(h["dro/max_weight"] for h in tv["history"]) > 1 / tv["config"]["batch_size"]
    ordinary = next(r for r in runs if r["label"] == "ordinary")
    assert not any(k.startswith("dro/") for k in ordinary["history"][0])  # TRL's own loss, untouched
    assert "rewards/margins" in ordinary["history"][0]

    printed = printed_text(out)
    assert record["conclusion"] and record["conclusion"] in printed
    assert "ordinary DPO" in record["conclusion"]
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("accuracy", "correct", "kl"):
        assert f"03_dpo_robustness_{what}.html" in figures
