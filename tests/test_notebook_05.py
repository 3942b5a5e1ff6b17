"""Notebook 05 on fake-but-schema-correct results, and on none: it records, or says which runs to make."""

import json

import numpy as np
import pandas as pd
import pytest

from drostudy.analysis import stats
from drostudy.analysis.results import collect
from drostudy.io import atomic_write_json
from drostudy.runner.notebooks import displayed_markdown, notebooks_dir, printed_text
from drostudy.runner.tasks import Task, run_task

pytestmark = pytest.mark.slow
NOTEBOOK = notebooks_dir() / "05_ood_analysis.ipynb"


def metrics(stage, method, radius, seed, ood):
    """A run in the drostudy/runs.py layout: trained on chat and safety, tested on math and code too."""
    per_domain = {"chat": 0.80, "safety": 0.75, "math": ood, "code": ood - 0.02}
    return {
        "stage": stage,
        "method": method,
        "config": {
            "divergence": "tv",
            "radius": radius,
            "seed": seed,
            "train_domains": ["chat", "safety"],
            "eval_domains": ["math", "code"],
        },
        "per_domain": {
            d: {"accuracy": a - (0.05 if radius and d in ("chat", "safety") else 0)}
            for d, a in per_domain.items()
        },
        "timings": {"total_s": 1.0},
        "history": [],
    }


def paired_02(results):
    """A constructed 02 comparisons CSV (three stages, two settings) and the record fields 05 reads."""
    rng = np.random.default_rng(0)
    rows = [
        dict(stage=stage, setting=setting, seed=seed, split=split, domain=domain, metric="accuracy")
        | dict(value=0.6 + gain * (split == "ood") + rng.normal(0, 0.01))
        for stage in ("rm A", "rm B", "rm A noise 0.1")
        for setting, gain in (("ordinary", 0.0), ("tv 0.5", 0.03))
        for seed in range(4)
        for split, domain in (("id", "math"), ("ood", "safety"))
    ]
    table = stats.comparisons_table(stats.add_domain_mean(pd.DataFrame(rows)))
    results.mkdir(parents=True, exist_ok=True)
    stats.write_comparisons(table, results / "02_reward_model_robustness.comparisons.csv")
    domains = ["math"] * 5 + ["safety"] * 5
    margins = [
        {"label": f"rm A | {s}", "seed": 0, "margins": rng.normal(0.2, 1, 10).tolist()}
        for s in ("ordinary", "tv 0.5")
    ]
    return {
        "primary": ["rm A", "tv 0.5"],
        "severity": {"rm A": 0.1, "rm B": 0.2, "rm A noise 0.1": 0.12},
        "splits": {"A": [["math"], ["safety"]]},
        "test_domains": domains,
        "test_margins": margins,
    }


def run(tmp_path, results, **params):
    """Execute 05 as a sweep or the study would (a papermill process of its own); return what it printed
    and the Markdown it displayed."""
    task = Task(
        "notebook",
        str(NOTEBOOK),
        {"RESULTS_DIR": str(results), "SMOKE": True, **params},
        tmp_path / "run",
    )
    record = run_task(task, env={"DROSTUDY_FIGURES": str(tmp_path / "figures"), "DROSTUDY_NO_PNG": "1"})
    assert record["status"] == "ok", (task.run_dir / "error.txt").read_text()
    executed = task.run_dir / NOTEBOOK.name
    shown = "".join(displayed_markdown(executed))
    return printed_text(executed), shown


def test_notebook_05_on_recorded_results(tmp_path):
    results = tmp_path / "results"
    rm_runs = [metrics("rm", "ordinary", 0.0, s, 0.55 + 0.01 * s) for s in range(3)]
    rm_runs += [
        metrics("rm", "robust", r, s, 0.55 + 2 * r + 0.01 * s) for r in (0.05, 0.1) for s in range(3)
    ]
    atomic_write_json(results / "02_reward_models.json", {"runs": rm_runs} | paired_02(results))
    dpo_runs = [metrics("dpo", m, r, 0, 0.5 + r) for m, r in (("ordinary", 0.0), ("robust", 0.1))]
    atomic_write_json(results / "03_dpo.json", {"runs": dpo_runs})
    # a sweep table with one more rm run
    atomic_write_json(tmp_path / "sweep" / "r" / "metrics.json", metrics("rm", "robust", 0.1, 3, 0.78))
    (tmp_path / "runs" / "s").mkdir(parents=True)
    collect(tmp_path / "sweep" / "r").to_parquet(tmp_path / "runs" / "s" / "results.parquet")

    printed, shown = run(
        tmp_path, results, SWEEP_TABLES=str(tmp_path / "runs" / "*" / "results.parquet")
    )
    assert "04_*.json missing: run notebooks/04" in printed  # the missing input is named, the rest runs
    record = json.loads((results / "05_ood_analysis.json").read_text())
    assert record["n_runs"] == 9 + 2 + 1
    rm = next(c for c in record["comparisons"] if c["stage"] == "rm")
    assert rm["best"]["radius"] == 0.1 and rm["best"]["seeds"] == 3  # the sweep's run is not pooled in
    assert {r["stage"] for r in record["settings"]} == {"rm", "dpo", "rm @s"}
    assert rm["id_cost"] == pytest.approx(0.05)
    assert rm["ood_intervals_overlap"] is False
    assert {c["stage"] for c in record["comparisons"]} == {"rm", "dpo"}  # "rm @s" has no ordinary run
    # the findings, Markdown from the numbers: every conclusion line, the primary the record names, the table
    assert all(f"- {line}" in shown for line in record["conclusion"].splitlines())
    assert "- [rm] best OOD accuracy: robust (tv, radius 0.1)" in shown
    assert "| 02 | rm A | tv 0.5 | accuracy | 4 | +0.0" in shown
    assert [(p["notebook"], p["setting"]) for p in record["primaries"]] == [("02", "tv 0.5")]
    assert "03_*.comparisons.csv missing: run notebooks/03" in printed  # the paired map names it too
    assert "| rm B | tv 0.5 | accuracy | 4 |" in shown  # the generated findings table, from the CSV
    names = {p.name for p in (tmp_path / "figures").glob("05_*.html")}
    assert {
        "05_ood_analysis_when_robustness_pays.html",
        "05_ood_analysis_robustness_curves.html",
    } <= names
    assert {"05_ood_analysis_rm_vs_radius.html", "05_ood_analysis_rm_s_vs_radius.html"} <= names
    assert {"05_ood_analysis_id_vs_ood.html", "05_ood_analysis_seed_spread.html"} <= names


def test_notebook_05_without_inputs_says_what_to_run(tmp_path):
    printed, shown = run(tmp_path, tmp_path / "empty", SWEEP_TABLES="none")
    assert "02_*.json missing: run notebooks/02" in printed and "`make study`" in printed
    assert "Nothing to analyse yet" in printed and "No comparisons recorded yet" in shown
    assert not (tmp_path / "empty" / "05_ood_analysis.json").exists()
