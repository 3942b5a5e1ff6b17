"""Notebook 04 end to end in SMOKE mode on tiny random models: it trains a reward model and both RL methods,
saves its figures, records one metrics dict per run and prints a conclusion computed from them."""

import json

import pytest

from drostudy.runner.notebooks import execute_notebook, notebooks_dir, printed_text

pytestmark = (
    pytest.mark.slow
)  # about a minute on a free 2-core machine: kernel, tiny reward model, 2 RL runs
NOTEBOOK = notebooks_dir() / "04_rl_robustness.ipynb"


def test_notebook_04_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "RADIUS": 0.4, "TRAIN_DOMAINS": "math", "EVAL_DOMAINS": "safety"}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = json.loads((tmp_path / "results" / "04_rl_robustness.json").read_text())
    assert record["smoke"] is True
    runs = {(r["method"], r["seed"]): r for r in record["runs"]}
    assert set(runs) == {("ordinary", 0), ("robust", 0)}
    assert (
        runs["robust", 0]["config"]["radius"] == 0.4 and runs["ordinary", 0]["config"]["radius"] == 0.0
    )
    for run in runs.values():
        assert run["stage"] == "rl" and set(run["per_domain"]) == {"math", "safety"}
        assert (
            len(list((tmp_path / "runs" / "04_rl_smoke").glob(f"{run['method']}-s0-*/metrics.json")))
            == 1
        )
        assert {"learned_reward", "correct", "kl"} <= set(run["per_domain"]["safety"])
    assert "dro/max_weight" in runs["robust", 0]["history"][0]
    printed = printed_text(out)
    assert record["conclusion"] and record["conclusion"] in printed
    assert "out of distribution" in record["conclusion"]
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("per_domain", "training", "overoptimisation"):
        assert f"04_rl_robustness_{what}.html" in figures
