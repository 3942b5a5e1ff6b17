"""The committed findings: results/ and figures/ as `make study` left them, the README section made from
them, their provenance, and what makes them stale (drostudy.analysis.provenance, drostudy.analysis.findings).

The first tests read the repository as it is (a fresh clone included); the rest build their own results."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from drostudy.analysis import findings, provenance, stats
from drostudy.codehash import notebook_fingerprint

REPO = Path(__file__).resolve().parent.parent
RESULTS, FIGURES = REPO / "results", REPO / "figures"
MAX_COMMITTED_BYTES = 8_000_000  # "a few MB": records, comparisons, 32 PNGs; no per-run bulk


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start, end = text.index(findings.FINDINGS_START), text.index(findings.FINDINGS_END)
    return text[start + len(findings.FINDINGS_START) : end].strip()


def test_readme_findings_are_what_the_committed_results_and_the_code_give():
    """Regenerate with `python -m drostudy.analysis.findings` after `make study` (or after a code change,
    which the section then reports as making some notebooks' results older than the code)."""
    assert readme_section() == findings.section(RESULTS).strip()


def test_stale_notebooks_are_named_in_the_readme():
    stale = provenance.stale_notebooks(provenance.read_provenance(RESULTS))
    for stem in stale:
        assert stem in readme_section(), f"{stem} ran on older code: rerun `make study` or regenerate"


def linked_files(markdown: str) -> list[str]:
    """Local targets of the markdown links and images in `markdown` (no URLs, no anchors)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t for t in targets if not re.match(r"[a-z]+://|#|mailto:", t)]


@pytest.mark.parametrize("page", ["README.md", "figures/README.md"])
def test_every_linked_figure_and_file_exists(page):
    path = REPO / page
    if not path.exists():
        pytest.fail(f"{page} is missing: `make study` writes figures/README.md with the figures")
    missing = [t for t in linked_files(path.read_text()) if not (path.parent / t).exists()]
    assert not missing, f"{page} links files that are not in the repository: {missing}"


def test_committed_results_are_small_and_hold_no_per_run_bulk():
    listed = subprocess.run(
        ["git", "ls-files", "results", "figures"], cwd=REPO, capture_output=True, text=True
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout: nothing committed to inspect")
    files = [REPO / f for f in listed.stdout.split()]
    bulk = [f.name for f in files if f.name.endswith((".runs.json", ".html", ".ipynb", ".parquet"))]
    assert not bulk, f"per-run or generated bulk committed: {bulk}"
    assert sum(f.stat().st_size for f in files if f.exists()) < MAX_COMMITTED_BYTES


def test_the_figure_the_readme_shows_is_committed_as_png():
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme_section())
    assert images and all(i.endswith(".png") and (REPO / i).exists() for i in images)


# --- provenance and staleness on constructed results ----------------------------------------------------


def notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A question"), nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return path


def test_provenance_records_each_notebook_and_keeps_the_ones_not_rerun(tmp_path):
    books = tmp_path / "notebooks"
    books.mkdir()
    first = notebook(books / "01_a.ipynb", "from drostudy import weights")
    second = notebook(books / "02_b.ipynb", "from drostudy.analysis import stats")
    results = tmp_path / "results"
    entry = provenance.notebook_entry(first, "ok", 12.34, {"SMOKE": False})
    provenance.write_provenance(results, {"01_a": entry}, REPO)
    provenance.write_provenance(
        results, {"02_b": provenance.notebook_entry(second, "ok", 5.0, {})}, REPO
    )
    record = json.loads((results / provenance.PROVENANCE_FILE).read_text())
    assert set(record["notebooks"]) == {"01_a", "02_b"} and record["notebooks"]["01_a"]["wall_s"] == 12.3
    assert record["notebooks"]["01_a"]["fingerprint"] == notebook_fingerprint(first)
    assert "drostudy.weights" in record["notebooks"]["01_a"]["modules"]
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu"]
    assert set(record["git"]) == {"commit", "dirty"}
    assert provenance.stale_notebooks(record, books) == {}

    notebook(second, "from drostudy.analysis import stats\nx = 1")  # its code cells change
    record["notebooks"]["01_a"]["modules"]["drostudy.weights"] = "0" * 12  # as if weights.py changed
    record["notebooks"]["01_a"]["fingerprint"] = "changed"
    stale = provenance.stale_notebooks(record, books)
    assert stale["02_b"] == ["code cells"]
    assert "drostudy.weights" in stale["01_a"]
    first.unlink()
    assert provenance.stale_notebooks(record, books)["01_a"] == ["notebook removed"]


def table(ci_low: float, ci_high: float, verdict: str) -> pd.DataFrame:
    row = dict(stage="rm A", setting="robust tv 0.5", baseline="ordinary", split="ood", domain="mean")
    row |= dict(metric="accuracy", n_seeds=10, mean_diff=(ci_low + ci_high) / 2, ci_low=ci_low)
    row |= dict(ci_high=ci_high, mde=0.01, verdict=verdict)
    return pd.DataFrame([row], columns=list(stats.COLUMNS))


@pytest.mark.parametrize(
    ("ci", "verdict", "fragile"),
    [
        ((-0.027, -0.0016), "worse", True),  # the README's old primary: 0.0016 from 0
        ((-0.027, -0.008), "worse", False),
        ((-0.0141, 0.0021), "not resolved", True),
        ((-0.02, 0.02), "not resolved", False),
    ],
)
def test_a_verdict_on_the_edge_is_marked_fragile(ci, verdict, fragile):
    text = findings.findings_markdown(table(*ci, verdict), [])
    assert (f"| {verdict} (fragile) |" in text) is fragile
    assert (stats.fragility_note(*ci) != "") is fragile


def test_the_section_states_provenance_and_stale_notebooks():
    record = {
        "git": {"commit": "abcdef1234567", "dirty": False},
        "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2.13.0"},
        "notebooks": {
            "02_x": {"wall_s": 600.0, "date": "2026-12-05T21:00:00+00:00", "params": {"FULL": False}}
        },
    }
    fresh = findings.findings_markdown(table(-0.02, 0.02, "not resolved"), [], provenance=record)
    assert "commit `abcdef1234`" in fresh and "Some CPU (2 cores" in fresh and "02 10.0 min" in fresh
    assert "made by the code as it is in this commit" in fresh
    stale = findings.findings_markdown(
        table(-0.02, 0.02, "not resolved"), [], provenance=record, stale={"02_x": ["drostudy.losses"]}
    )
    assert "**Older than the code**" in stale and "02_x (drostudy.losses)" in stale
