"""Notebook 03 end to end (SMOKE, tiny random Llama, every method on the fast path, 2 paired seeds): the
figures are saved, the results file holds sane per-domain numbers, the comparisons CSV holds one paired row
per setting and endpoint plus the rows matched along ordinary DPO's beta and steps, the frontier figures exist, and the
findings, rendered as Markdown, state the primary comparison and the matched one."""

import pandas as pd
import pytest

from drostudy.analysis import stats
from drostudy.analysis.records import read_record
from drostudy.runner.notebooks import displayed_markdown, execute_notebook, notebooks_dir, printed_text

NOTEBOOK = notebooks_dir() / "03_dpo_robustness.ipynb"
METHODS = {"tv", "kl", "chi2", "dr_dpo", "kldpo", "group_eg", "rdpo", "wdpo"}  # besides ordinary
# each method's setting label in the results tables, at the notebook's radii (RADIUS_TV set below)
SETTINGS = {"ordinary", "tv 0.3", "kl 0.1", "chi2 0.25", "dr_dpo", "kldpo", "group_eg", "rdpo", "wdpo"}
# ordinary DPO along beta and steps (SMOKE's BETAS and STEPS_GRID; SMOKE trains 2 steps)
KNOB_SETTINGS = {"ordinary beta 0.4", "ordinary beta 1.6", "ordinary steps 1"}
MATCHED = {
    f"ordinary matched on {on} ({knob})"
    for on in ("id accuracy", "ood kl")
    for knob in ("beta", "steps")
}
DOMAINS = {"math", "code", "reasoning"}


@pytest.mark.slow  # kernel start and twenty-four tiny DPO runs
def test_notebook_03_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {
        "SMOKE": True,
        "RADIUS_TV": 0.3,
        "TRAIN_DOMAINS": "math,code",
        "EVAL_DOMAINS": "reasoning",
        "METHODS": ",".join(sorted(METHODS)),
    }
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    record = read_record(tmp_path / "results" / "03_dpo_robustness.json")
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    runs = record["runs"]
    seeds = record["parameters"]["SEEDS"]
    assert seeds >= 2 and len(runs) == len(SETTINGS | KNOB_SETTINGS) * seeds
    assert {r["label"] for r in runs} == SETTINGS | KNOB_SETTINGS
    assert record["parameters"]["BETAS"] == "0.4,1.6" and record["parameters"]["STEPS_GRID"] == "1"
    for run in runs:  # the knob runs are ordinary DPO at their beta or steps, on the same seeds
        if run["label"] in KNOB_SETTINGS:
            assert run["config"]["loss"] == "ordinary" and run["config"]["wdpo_radius"] == 0
            knob = run["label"].split()[1]
            assert run["label"] == f"ordinary {knob} {run['config'][knob]:g}"
    for run in runs:
        assert run["stage"] == "dpo" and set(run["per_domain"]) == DOMAINS
        for values in run["per_domain"].values():
            assert 0 <= values["accuracy"] <= 1 and values["kl"] >= 0
            assert "correct" not in values  # GENERATE is off by default
        assert len(run["history"]) == run["config"]["steps"]
        assert run["config"]["batch_size"] >= 16
    tv = next(r for r in runs if r["label"] == "tv 0.3")
    assert (tv["method"], tv["divergence"], tv["radius"]) == ("robust", "tv", 0.3)
    assert max(h["dro/max_weight"] for h in tv["history"]) > 1 / tv["config"]["batch_size"]
    wdpo = next(r for r in runs if r["label"] == "wdpo")
    assert wdpo["method"] == "wdpo" and all(h["wdpo/penalty"] > 0 for h in wdpo["history"])
    # paired seeds: every method of a seed trained on the same pairs
    assert len({(r["config"]["seed"], r["n_train"]) for r in runs}) == seeds

    written = pd.read_csv(tmp_path / "results" / "03_dpo_robustness.comparisons.csv")
    assert tuple(written.columns) == stats.COLUMNS
    # the matched rows: every robust setting on both matchings along both knobs, OOD-mean accuracy
    matched = written[written.baseline != "ordinary"]
    assert set(matched.baseline) == MATCHED and len(matched) == 4 * len(METHODS)
    assert set(matched.setting) == SETTINGS - {"ordinary"}
    assert {(r.split, r.domain, r.metric) for r in matched.itertuples()} == {("ood", "mean", "accuracy")}
    assert (matched.n_seeds <= seeds).all() and set(matched.verdict) <= set(stats.VERDICTS)
    diagnosed = pd.DataFrame(record["matched_diagnostics"])
    assert len(diagnosed) == len(matched) and set(diagnosed.baseline) == MATCHED
    assert (diagnosed.seeds_bracketed + diagnosed.seeds_left_out == diagnosed.n_seeds).all()
    assert record["matched_primary"] == ["dpo", "tv 0.3", "ordinary matched on id accuracy (steps)"]
    # the plain family: exactly the rows of a study without the knob runs
    table = written[written.baseline == "ordinary"]
    assert set(table.setting) == SETTINGS - {"ordinary"} and set(table.baseline) == {"ordinary"}
    assert set(table.metric) == {"accuracy", "margin", "kl"}
    assert set(table.domain) == DOMAINS | {"mean"} and set(table.split) == {"id", "ood"}
    # one row per setting and endpoint: 3 domains + 2 split means, 3 metrics
    assert len(table) == len(METHODS) * (len(DOMAINS) + 2) * 3
    assert (table.n_seeds == seeds).all() and (table.ci_low <= table.ci_high).all()
    assert set(table.verdict) <= set(stats.VERDICTS)

    findings = displayed_markdown(out)[-1]
    assert findings.startswith("### What was found")
    for line in record["conclusion"].splitlines():  # every sentence of the record, rendered
        assert line in findings
    assert "Primary: tv 0.3 - ordinary" in record["conclusion"] and "target <= 0.03" in findings
    assert "Matched primary: tv 0.3 - ordinary matched on id accuracy (steps)" in findings
    assert "KL saving: tv 0.3" in findings
    assert record["primary"] == ["dpo", "tv 0.3"]  # what notebook 05 reads
    assert "ordinary DPO" in record["conclusion"]
    assert "notebook time" in printed_text(out)
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("accuracy", "kl", "frontier", "frontier_kl"):
        assert f"03_dpo_robustness_{what}.html" in figures
