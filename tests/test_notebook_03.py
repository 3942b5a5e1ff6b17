"""Notebook 03 end to end (SMOKE, tiny random Llama, every method on the fast path, 2 paired seeds): the
figures are saved, the results file holds sane per-domain numbers, the comparisons CSV holds one paired row
per setting and endpoint, and the printed conclusion states the primary comparison."""

import pandas as pd
import pytest

from drostudy.analysis import stats
from drostudy.analysis.records import read_record
from drostudy.runner.notebooks import execute_notebook, notebooks_dir, printed_text

NOTEBOOK = notebooks_dir() / "03_dpo_robustness.ipynb"
METHODS = {"ordinary", "tv", "kl", "chi2", "dr_dpo", "kldpo", "group", "rdpo", "wdpo"}
DOMAINS = {"math", "code", "reasoning"}


@pytest.mark.slow  # kernel start and eighteen tiny DPO runs
def test_notebook_03_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {
        "SMOKE": True,
        "RADIUS_TV": 0.3,
        "TRAIN_DOMAINS": "math,code",
        "EVAL_DOMAINS": "reasoning",
        "METHODS": ",".join(sorted(METHODS - {"ordinary"})),
    }
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = read_record(tmp_path / "results" / "03_dpo_robustness.json")
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    runs = record["runs"]
    seeds = record["parameters"]["SEEDS"]
    assert seeds >= 2 and len(runs) == len(METHODS) * seeds
    assert {r["label"] for r in runs} == METHODS
    for run in runs:
        assert run["stage"] == "dpo" and set(run["per_domain"]) == DOMAINS
        for values in run["per_domain"].values():
            assert 0 <= values["accuracy"] <= 1 and values["kl"] >= 0
            assert "correct" not in values  # GENERATE is off by default
        assert len(run["history"]) == run["config"]["steps"]
        assert run["config"]["batch_size"] >= 16
    tv = next(r for r in runs if r["label"] == "tv")
    assert (tv["method"], tv["divergence"], tv["radius"]) == ("robust", "tv", 0.3)
    assert max(h["dro/max_weight"] for h in tv["history"]) > 1 / tv["config"]["batch_size"]
    wdpo = next(r for r in runs if r["label"] == "wdpo")
    assert wdpo["method"] == "wdpo" and all(h["wdpo/penalty"] > 0 for h in wdpo["history"])
    # paired seeds: every method of a seed trained on the same pairs
    assert len({(r["config"]["seed"], r["n_train"]) for r in runs}) == seeds

    table = pd.read_csv(tmp_path / "results" / "03_dpo_robustness.comparisons.csv")
    assert tuple(table.columns) == stats.COLUMNS
    assert set(table.setting) == METHODS - {"ordinary"} and set(table.baseline) == {"ordinary"}
    assert set(table.metric) == {"accuracy", "margin", "kl"}
    assert set(table.domain) == DOMAINS | {"mean"} and set(table.split) == {"id", "ood"}
    # one row per setting and endpoint: 3 domains + 2 split means, 3 metrics
    assert len(table) == (len(METHODS) - 1) * (len(DOMAINS) + 2) * 3
    assert (table.n_seeds == seeds).all() and (table.ci_low <= table.ci_high).all()
    assert set(table.verdict) <= set(stats.VERDICTS)

    printed = printed_text(out)
    assert record["conclusion"] and record["conclusion"] in printed
    assert "Primary: tv - ordinary" in record["conclusion"] and "target <= 0.03" in printed
    assert "ordinary DPO" in record["conclusion"]
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("accuracy", "kl"):
        assert f"03_dpo_robustness_{what}.html" in figures


def test_method_selection_keeps_ordinary_first_and_rejects_unknown_names():
    from drostudy.analysis import dpo_study

    every = dpo_study.method_overrides({"tv": 0.2}, wdpo_radius=3.0)
    assert list(dpo_study.select_methods(every, "wdpo,tv")) == ["ordinary", "wdpo", "tv"]
    assert "wdpo" not in dpo_study.method_overrides({"tv": 0.2})  # radius 0: WDPO is ordinary DPO
    with pytest.raises(ValueError, match="unknown method"):
        dpo_study.select_methods(every, "tv,dpo")
