"""Notebook 04 end to end in SMOKE mode: the exact testbed (paired seeds, ordinary along beta and the matched
rows, convergence, curves) and both LLM methods on tiny random models; it writes the comparisons CSV (both
stages, the matched rows), its figures, its parameters and its findings, Markdown computed from the
numbers."""

import pandas as pd
import pytest

from drostudy.analysis.records import read_record
from drostudy.analysis.stats import COLUMNS, VERDICTS
from drostudy.runner.notebooks import displayed_markdown, execute_notebook, notebooks_dir, printed_text

pytestmark = pytest.mark.slow  # about a minute on a free 2-core machine
NOTEBOOK = notebooks_dir() / "04_rl_robustness.ipynb"


def test_notebook_04_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "RADIUS": 0.4, "TRAIN_DOMAINS": "math", "EVAL_DOMAINS": "safety"}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = read_record(tmp_path / "results" / "04_rl_robustness.json")
    assert record["smoke"] is True
    assert record["parameters"]["RADIUS"] == 0.4 and record["parameters"]["TESTBED_SEEDS"] == 3
    runs = {(r["method"], r["seed"]): r for r in record["runs"]}
    assert set(runs) == {(m, s) for m in ("ordinary", "robust") for s in (0, 1)}
    assert (
        runs["robust", 0]["config"]["radius"] == 0.4 and runs["ordinary", 0]["config"]["radius"] == 0.0
    )
    for (method, seed), run in runs.items():
        assert run["stage"] == "rl" and set(run["per_domain"]) == {"math", "safety"}
        folders = (tmp_path / "runs" / "04_rl_smoke").glob(f"{method}-s{seed}-*/metrics.json")
        assert len(list(folders)) == 1
    # the testbed's paired runs: per seed one resumable folder of the balls, one of ordinary's other betas
    testbed_runs = tmp_path / "runs" / "04_rl_smoke" / "testbed"
    assert len(list(testbed_runs.glob("paired-s*-*/metrics.json"))) == 3
    assert len(list(testbed_runs.glob("knob-s*-*/metrics.json"))) == 3

    table = pd.read_csv(tmp_path / "results" / "04_rl_robustness.comparisons.csv")
    assert tuple(table.columns) == COLUMNS and set(table.verdict) <= set(VERDICTS)
    assert set(table.stage) == {"rl_testbed", "rl_llm"}
    matched_baselines = {"ordinary matched on id correct (beta)", "ordinary matched on ood kl (beta)"}
    assert set(table.baseline) == {"ordinary"} | matched_baselines
    # the matched rows: every ball against ordinary moved along beta, on the OOD-mean correctness
    matched = table[table.baseline != "ordinary"]
    assert set(matched.stage) == {"rl_testbed"} and len(matched) == 2 * 4
    assert {"tv 0.1", "tv 0.2", "tv 0.4", "kl 0.5"} == set(matched.setting)
    assert set(matched.split + " " + matched.domain + " " + matched.metric) == {"ood mean correct"}
    assert (matched.n_seeds <= 3).all()
    table = table[table.baseline == "ordinary"]
    testbed = table[table.stage == "rl_testbed"]
    assert {"tv 0.1", "tv 0.2", "tv 0.4", "kl 0.5"} == set(testbed.setting)
    assert {"correct", "reward", "kl", "chosen"} == set(testbed.metric)
    assert {"math", "safety", "mean"} == set(testbed.domain) and (testbed.n_seeds == 3).all()
    primary = testbed[
        (testbed.setting == "tv 0.4")
        & (testbed.split == "ood")
        & (testbed.domain == "mean")
        & (testbed.metric == "correct")
    ]
    assert (
        len(primary) == 1 and primary.ci_low.item() <= primary.mean_diff.item() <= primary.ci_high.item()
    )
    assert record["primary"]["setting"] == "tv 0.4"
    assert record["matched_primary"]["setting"] == "tv 0.4"
    assert record["matched_primary"]["text"].startswith(
        "Matched primary (testbed): tv 0.4 vs ordinary matched on id correct (beta)"
    )
    assert record["parameters"]["BETAS"] == "0.05,0.2,0.4,0.8,1.6,3.2"
    assert set(table[table.stage == "rl_llm"].setting) == {"tv 0.4"}

    assert record["conclusion"] and record["conclusion"] == "".join(displayed_markdown(out))
    assert record["conclusion"].startswith("**Primary (testbed): tv 0.4 vs ordinary")
    assert "| setting - ordinary | ood correct |" in record["conclusion"]
    assert "LLM part (SmolLM2 RLOO, 2 seeds, 2 steps): tv 0.4 - ordinary" in record["conclusion"]
    assert (
        "**Matched primary (testbed): tv 0.4 vs ordinary matched on id correct" in record["conclusion"]
    )
    assert "Below the reference policy (OOD-mean correctness" in record["conclusion"]
    assert (
        "Frontier, ID vs OOD correctness (robust point vs ordinary's beta curve): "
        in (record["conclusion"])
    )
    assert "Primary (testbed): tv 0.4 vs ordinary" in printed_text(out)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in (
        "convergence",
        "testbed_domains",
        "testbed_paired",
        "overoptimisation",
        "testbed_frontier",
        "testbed_frontier_kl",
        "per_domain",
        "training",
    ):
        assert f"04_rl_robustness_{what}.html" in figures
