"""Test-wide settings: no hub access (a stray hub call fails at once) and a small, fixed thread count."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def notebook_env(tmp_path):
    """Environment of a notebook run in a test: figures, results and runs under tmp_path, never the
    repository's; no PNG export (tested in test_plotting; here it would only cost time)."""
    return {
        "DROSTUDY_FIGURES": str(tmp_path / "figures"),
        "DROSTUDY_RESULTS": str(tmp_path / "results"),
        "DROSTUDY_RUNS": str(tmp_path / "runs"),
        "DROSTUDY_NO_PNG": "1",
    }
