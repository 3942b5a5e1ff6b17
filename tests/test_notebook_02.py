"""Notebook 02 end to end (SMOKE, tiny BERT): the paired grid runs, writes its comparisons CSV with paired
differences for every stage and the matched rows (ordinary training along its own knobs, matched on ID
accuracy), records its parameters and margins, saves its figures and shows its findings."""

import pandas as pd
import pytest

from drostudy.analysis import stats
from drostudy.analysis.records import read_record
from drostudy.runner.notebooks import (
    displayed_markdown,
    execute_notebook,
    notebook_parameters,
    notebooks_dir,
    printed_text,
)

NOTEBOOK = notebooks_dir() / "02_reward_model_robustness.ipynb"


def test_papermill_parses_every_parameter_with_its_comment(caplog):
    """`papermill --help-notebook` lists each parameter with its default and smoke values."""
    import papermill

    found = papermill.inspect_notebook(str(NOTEBOOK))
    assert "Unable to parse" not in caplog.text
    assert set(found) == set(notebook_parameters(NOTEBOOK))
    for name, parameter in found.items():
        assert "default" in parameter["help"] or name == "SMOKE", name


@pytest.mark.slow  # kernel start, the suite, 30 tiny runs
def test_notebook_02_smoke(tmp_path, notebook_env):
    out = tmp_path / "executed.ipynb"
    params = {"SMOKE": True, "HEADLINE_RADIUS": 0.3, "OUTLIER_FRACTION": 0.125}
    execute_notebook(NOTEBOOK, out, params, env=notebook_env, progress_bar=False)

    results = tmp_path / "results"
    record = read_record(results / "02_reward_model_robustness.json")
    assert record["parameters"] | params == record["parameters"]  # the parameters reached the kernel
    both = pd.read_csv(results / "02_reward_model_robustness.comparisons.csv")
    assert tuple(both.columns) == stats.COLUMNS
    table, matched = both[both.baseline == "ordinary"], both[both.baseline != "ordinary"]
    assert not table.setting.str.startswith("ordinary").any()  # the knob settings are not compared here
    knobs = ("weight_decay", "steps", "label_smoothing")
    assert set(matched.baseline) == {f"ordinary matched on id accuracy ({k})" for k in knobs}
    robust_a = {"tv 0.3", "group tv 0.3", "doro tv 0.3 eps 0.125", "kl 0.5"}
    for _, part in matched.groupby("baseline"):
        assert set(part.setting) == robust_a and set(part.stage) == {"rm A"}
        assert set(part.split) == {"ood"} and set(part.domain) == {"mean"}
    assert (matched.n_seeds <= 3).all() and set(matched.verdict) <= set(stats.VERDICTS)
    resolved = matched.dropna(subset=["mean_diff"])
    assert (resolved.n_seeds >= 2).all()
    assert (resolved.ci_low <= resolved.mean_diff).all() and (
        resolved.mean_diff <= resolved.ci_high
    ).all()
    assert len(record["matched"]) == len(matched) and record["primary_matched"]["knob"] == "steps"
    assert len(record["matched_diagnostics"]) == len(matched)
    headline = {"tv 0.3", "group tv 0.3", "doro tv 0.3 eps 0.125"}
    assert set(table.stage) == {"rm A", "rm B", "rm A noise 0.1"}
    for _, part in table.groupby("stage"):
        assert headline <= set(part.setting) and set(part.baseline) == {"ordinary"}
        assert set(part.split) == {"id", "ood"} and "mean" in set(part.domain)
    assert {"tv 0.3", "kl 0.5"} <= set(table[table.stage == "rm A"].setting)
    extra = (table.stage == "rm A") & table.setting.isin(headline)  # HEADLINE_SEEDS (3 in SMOKE)
    assert (table[extra].n_seeds == 3).all() and (table[~extra].n_seeds == 2).all()
    assert set(table.verdict) <= set(stats.VERDICTS)
    assert (table.ci_low <= table.mean_diff).all() and (table.mean_diff <= table.ci_high).all()
    # paired differences: robust settings really differ from ordinary on some pairs
    assert (table.mean_diff != 0).any()
    runs = record["runs"]
    # 13 settings (5 on A, 4 on B, 4 noisy on A) x 2 seeds + a 3rd seed of ordinary and the headline on A,
    # + ordinary along its knobs on A (weight decay 30, steps 1 and 6, label smoothing 0.2) x 3 seeds
    assert len(runs) == 2 * 13 + 4 + 4 * 3
    along = {r["label"] for r in runs if r["label"].startswith("rm A | ordinary ")}
    assert along == {
        "rm A | ordinary weight_decay 30",
        "rm A | ordinary steps 1",
        "rm A | ordinary steps 6",
        "rm A | ordinary label_smoothing 0.2",
    }
    for run in runs:
        assert set(run["per_domain"]) == {"math", "code", "reasoning", "knowledge", "safety"}
        assert all(d["n"] == 16 for d in run["per_domain"].values())  # N_EVAL per domain, all domains
    noisy = [r for r in runs if r["config"]["label_noise"] == 0.1]
    assert noisy and all(r["method"].endswith("_noise0.1") for r in noisy)
    assert len(record["test_margins"]) == 3 * 4  # ordinary + 3 headline settings on A, three seeds
    assert all(len(m["margins"]) == len(record["test_domains"]) for m in record["test_margins"])
    assert set(record["severity"]) == {"rm A", "rm B", "rm A noise 0.1"}

    assert "targets met:" in printed_text(out)
    assert record["conclusion"] in "".join(displayed_markdown(out))  # the findings, shown as Markdown
    assert record["conclusion"].startswith("**Primary** (tv 0.3 vs ordinary, rm A, OOD mean")
    assert (
        "**Matched** (tv 0.3 vs ordinary at the same ID-mean accuracy along steps"
        in record["conclusion"]
    )
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for what in ("radius", "shift", "noise", "curves", "frontier"):
        assert f"02_reward_model_robustness_{what}.html" in figures
