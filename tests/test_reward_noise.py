"""RMConfig's label noise (nested, paired flips of training pairs) and DORO (outlier_fraction) on the reward
path."""

import dataclasses

import numpy as np
import pytest
import torch

from drostudy.data import load_suite
from drostudy.reward import data as reward_data
from drostudy.reward import fast as reward_cached
from drostudy.reward.objective import bradley_terry_objective
from drostudy.reward.run import RMConfig


@pytest.fixture(scope="module")
def suite():
    return load_suite()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("label_noise", 0.5, "label_noise"),
        ("label_noise", -0.1, "label_noise"),
        ("label_noise", True, "label_noise"),
        ("outlier_fraction", 1.0, "outlier_fraction"),
        ("outlier_fraction", -0.1, "outlier_fraction"),
    ],
)
def test_bad_noise_and_outlier_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        RMConfig(**{field: value})


def test_doro_needs_example_level():
    with pytest.raises(ValueError, match="level='example'"):
        RMConfig(radius=0.2, level="group", outlier_fraction=0.1)


def test_method_labels_name_doro_and_noise():
    assert RMConfig(radius=0.2, outlier_fraction=0.1).method == "doro"
    assert RMConfig(outlier_fraction=0.1).method == "doro"  # trimming alone changes the loss
    assert RMConfig(label_noise=0.1).method == "ordinary_noise0.1"
    assert RMConfig(radius=0.2, level="group", label_noise=0.2).method == "group_noise0.2"
    assert RMConfig().method == "ordinary"


def test_setting_labels_name_the_objective_not_the_data():
    """drostudy.config.setting_label's names; label noise and kinds belong to the stage, not the setting."""
    assert RMConfig(radius=0.5).setting == "tv 0.5"
    assert RMConfig(radius=0.5, level="group", label_noise=0.1).setting == "group tv 0.5"
    assert RMConfig(radius=0.5, outlier_fraction=0.1).setting == "doro tv 0.5 eps 0.1"
    assert RMConfig(divergence="kl", radius=2.0, train_kinds=("refusal",)).setting == "kl 2"
    assert RMConfig(level="group", label_noise=0.2).setting == "ordinary"


def test_flips_are_paired_nested_and_exact(suite):
    base = RMConfig(n_train=200, seed=3)
    clean = reward_data.train_pairs(suite["train"], base)
    low = reward_data.train_pairs(suite["train"], dataclasses.replace(base, label_noise=0.1))
    high = reward_data.train_pairs(
        suite["train"], dataclasses.replace(base, label_noise=0.2, radius=0.5)
    )
    other = reward_data.train_pairs(
        suite["train"], dataclasses.replace(base, label_noise=0.1, radius=0.9, level="group")
    )
    assert low["id"] == clean["id"] == high["id"]  # same training subset
    flipped_low, flipped_high = np.array(low["flipped"]), np.array(high["flipped"])
    assert flipped_low.sum() == 20 and flipped_high.sum() == 40
    assert (flipped_high[flipped_low]).all()  # 0.2 flips a superset of 0.1's pairs
    assert other["flipped"] == low["flipped"]  # another objective with the same seed: the same flips
    for row, orig, f in zip(low, clean, flipped_low, strict=True):
        expected = (orig["rejected"], orig["chosen"]) if f else (orig["chosen"], orig["rejected"])
        assert (row["chosen"], row["rejected"]) == expected
    seed4 = reward_data.train_pairs(suite["train"], dataclasses.replace(base, label_noise=0.1, seed=4))
    assert seed4["id"] != low["id"]  # another seed, another subset (and other flips)


def test_flip_stream_is_not_the_model_stream(suite):
    """The flips do not depend on torch's or numpy's global state (the model's draws)."""
    config = RMConfig(n_train=100, label_noise=0.2, seed=1)
    torch.manual_seed(0)
    np.random.seed(0)
    a = reward_data.train_pairs(suite["train"], config)["flipped"]
    torch.manual_seed(99)
    np.random.seed(99)
    torch.rand(1000)
    b = reward_data.train_pairs(suite["train"], config)["flipped"]
    assert a == b


def test_objective_passes_the_outlier_fraction():
    chosen = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    rejected = torch.linspace(-2.0, 3.0, 10)  # the last pair has the largest loss
    trimmed = bradley_terry_objective(chosen, rejected, "tv", 0.2, "example", outlier_fraction=0.1)
    plain = bradley_terry_objective(chosen, rejected, "tv", 0.2, "example")
    assert float(trimmed.weights[-1]) == 0.0 and float(plain.weights[-1]) > 0.1
    assert float(trimmed.loss) < float(plain.loss)


def test_cached_features_follow_swapped_sides(suite):
    config = RMConfig(
        model="tiny-bert", n_train=24, frozen_layers=1, truncate_length=32, engine="cached"
    )
    model, tokenizer, _ = reward_cached.load_cached_model(config)
    features = reward_cached.FrozenFeatures(model, tokenizer, 1, 32)
    clean = reward_data.train_pairs(suite["train"], config)
    noisy = reward_data.train_pairs(suite["train"], dataclasses.replace(config, label_noise=0.25))
    chosen, rejected = features.pairs(clean)
    cached = len(features._store)
    noisy_chosen, noisy_rejected = features.pairs(noisy)
    assert len(features._store) == cached  # swapped pairs reuse their texts' features
    for i, f in enumerate(noisy["flipped"]):
        want = (rejected[i], chosen[i]) if f else (chosen[i], rejected[i])
        assert torch.equal(noisy_chosen[i], want[0]) and torch.equal(noisy_rejected[i], want[1])
