"""Notebook 04 end to end in SMOKE mode: the exact testbed (paired seeds, convergence, curves) and both LLM
methods on tiny random models; it writes the comparisons CSV (both stages), its figures, its parameters and
its findings, Markdown computed from the numbers."""

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
    # the testbed's paired runs: one resumable folder per seed
    assert (
        len(list((tmp_path / "runs" / "04_rl_smoke" / "testbed").glob("paired-s*-*/metrics.json"))) == 3
    )

    table = pd.read_csv(tmp_path / "results" / "04_rl_robustness.comparisons.csv")
    assert tuple(table.columns) == COLUMNS and set(table.verdict) <= set(VERDICTS)
    assert set(table.stage) == {"rl_testbed", "rl_llm"} and set(table.baseline) == {"ordinary"}
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
    assert set(table[table.stage == "rl_llm"].setting) == {"tv 0.4"}

    assert record["conclusion"] and record["conclusion"] == "".join(displayed_markdown(out))
    assert record["conclusion"].startswith("**Primary (testbed): tv 0.4 vs ordinary")
    assert "| setting - ordinary | ood correct |" in record["conclusion"]
    assert "LLM part (SmolLM2 RLOO, 2 seeds, 2 steps): tv 0.4 - ordinary" in record["conclusion"]
    assert "Primary (testbed): tv 0.4 vs ordinary" in printed_text(out)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in (
        "convergence",
        "testbed_domains",
        "testbed_paired",
        "overoptimisation",
        "per_domain",
        "training",
    ):
        assert f"04_rl_robustness_{what}.html" in figures
