"""Test-wide settings: no hub access (a stray hub call fails at once), quiet transformers and tokenizers,
notebook runs kept under tmp_path, and GPU tests skipped without a GPU. Thread counts are left to torch
(all cores) or to the caller's OMP_NUM_THREADS: drostudy.threads is the one place that sets them."""

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


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip, with the reason, where torch sees no CUDA device (scripts/gpu_check.sh runs
    them on one). DROSTUDY_GPU_TESTS_ON_CPU=1 runs them on the CPU instead: a rehearsal of their code."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or os.environ.get("DROSTUDY_GPU_TESTS_ON_CPU") == "1":
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU: torch.cuda.is_available() is False (run scripts/gpu_check.sh on a GPU "
        "machine, or set DROSTUDY_GPU_TESTS_ON_CPU=1 to rehearse these tests on the CPU)"
    )
    for item in gpu:
        item.add_marker(skip)
