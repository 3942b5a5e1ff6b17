"""The testbed's feature caches (drostudy.rl.testbed_features): a cached value does not depend on what the
cache held before or on which other texts were asked for with it (docs/reproducibility.md)."""

from __future__ import annotations

import numpy as np

from drostudy import models
from drostudy.rl import testbed_features

# different lengths, so that a padded batch of them would pad most
TEXTS = [
    "What is 2 + 2?",
    "Write a Python function that returns the sum of a list of integers, and explain it briefly.",
    "def add(a, b):\n    return a + b",
    "The answer is 4.",
    "Paris is the capital of France; it lies on the Seine and has about two million inhabitants.",
    "No.",
]


def _fill(monkeypatch, folder, orders: list[list[int]], fill) -> np.ndarray:
    """Values of every text after filling a fresh cache in `folder` with the subsets `orders`, in order."""
    monkeypatch.setenv("DROSTUDY_CACHE", str(folder))
    for subset in orders:
        fill([TEXTS[i] for i in subset])
    return fill(TEXTS)


def test_minilm_cache_does_not_depend_on_fill_order(monkeypatch, tmp_path):
    for left in (True, False):

        def fill(texts, left=left):
            return testbed_features.embed(texts, left=left)

        at_once = _fill(monkeypatch, tmp_path / f"a{left}", [], fill)
        pieces = _fill(monkeypatch, tmp_path / f"b{left}", [[5, 3], [0], [4, 1, 2]], fill)
        reversed_ = _fill(monkeypatch, tmp_path / f"c{left}", [[2, 4], [1, 3, 5, 0]], fill)
        assert at_once.shape == (len(TEXTS), 384) and np.isfinite(at_once).all()
        assert np.array_equal(at_once, pieces) and np.array_equal(at_once, reversed_)
        # a cached value is read back, not recomputed: the same bits again
        assert np.array_equal(fill(TEXTS[::-1]), at_once[::-1])


def test_smollm2_cache_does_not_depend_on_fill_order(monkeypatch, tmp_path):
    real = models.load_policy  # a tiny random model: the batch-of-one path, not SmolLM2's numbers
    monkeypatch.setattr(models, "load_policy", lambda: real("tiny-llama"))
    prompts = [TEXTS[i % 2] for i in range(len(TEXTS))]

    def fill(texts):
        index = [TEXTS.index(t) for t in texts]
        return testbed_features.smollm2_logps([prompts[i] for i in index], texts)

    at_once = _fill(monkeypatch, tmp_path / "a", [], fill)
    pieces = _fill(monkeypatch, tmp_path / "b", [[5, 3], [0], [4, 1, 2]], fill)
    assert at_once.shape == (len(TEXTS),) and (at_once < 0).all()
    assert np.array_equal(at_once, pieces)
