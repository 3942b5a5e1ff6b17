"""One config vocabulary across the three stages: same names, same method label, renamed flags still parse."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from drostudy.config import add_dataclass_arguments, ball_is_point, dataclass_from_args, pick_sizes
from drostudy.dpo.run import DPORunConfig
from drostudy.reward.run import RMConfig
from drostudy.rl.run import RLConfig

CONFIGS = (RMConfig, DPORunConfig, RLConfig)
SHARED = (
    "model",
    "learning_rate",
    "n_eval",
    "n_train",
    "seed",
    "divergence",
    "radius",
    "train_domains",
    "eval_domains",
)


@pytest.mark.parametrize("cls", CONFIGS)
def test_shared_names(cls):
    names = {f.name for f in dataclasses.fields(cls)}
    assert set(SHARED) <= names
    assert not {"lr", "n_test", "policy"} & names


def make(cls, **fields):
    """A config of `cls` with `fields` (RL needs a reward model; DPO's ball needs its robust loss)."""
    extra = {DPORunConfig: {"loss": "robust"}, RLConfig: {"reward_model": "tiny-bert"}}.get(cls, {})
    return cls(**fields, **extra)


@pytest.mark.parametrize("cls", CONFIGS)
def test_method_label_is_computed_the_same_way(cls):
    assert make(cls, divergence="tv", radius=0.0).method == "ordinary"
    assert make(cls, divergence="cvar", radius=1.0).method == "ordinary"
    assert make(cls, divergence="kl", radius=0.1).method == "robust"
    assert make(cls).method == "ordinary"  # DRO off by default


def test_ball_is_point():
    assert ball_is_point("tv", 0.0) and ball_is_point("cvar", 1.0)
    assert not ball_is_point("cvar", 0.5) and not ball_is_point("chi2", 1e-9)


@pytest.mark.parametrize(
    "cls,old,new,value,parsed",
    [
        (RMConfig, "--lr", "learning_rate", "0.25", 0.25),
        (RMConfig, "--n-test", "n_eval", "7", 7),
        (DPORunConfig, "--policy", "model", "tiny-llama", "tiny-llama"),
        (RLConfig, "--policy", "model", "tiny-llama", "tiny-llama"),
    ],
)
def test_renamed_flags_parse_with_a_warning(cls, old, new, value, parsed):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls)
    with pytest.warns(FutureWarning, match=f"{old} is deprecated; use --{new.replace('_', '-')}"):
        args = parser.parse_args(
            [old, value, *(["--reward-model", "tiny-bert"] if cls is RLConfig else [])]
        )
    assert getattr(dataclass_from_args(cls, args), new) == parsed
    new_args = parser.parse_args([f"--{new.replace('_', '-')}", value])
    assert getattr(new_args, new) == parsed


@dataclasses.dataclass(frozen=True)
class _Sizes:
    seeds: int = 3
    radii: tuple[float, ...] = (0.1, 0.2)
    names: tuple[str, ...] = ("a",)


@pytest.mark.parametrize(
    "given, expected",
    [
        ({"radii": "0.5, 0.7"}, {"radii": (0.5, 0.7)}),  # a notebook parameter or sweep value
        ({"radii": ""}, {"radii": ()}),  # "" means none
        ({"radii": 0.3}, {"radii": (0.3,)}),  # one item
        ({"radii": [1, "2"]}, {"radii": (1.0, 2.0)}),  # a list, items converted
        ({"names": "x,y", "seeds": 5}, {"names": ("x", "y"), "seeds": 5}),
        ({"seeds": None, "radii": None}, {"seeds": 3, "radii": (0.1, 0.2)}),  # None keeps the mode's
    ],
)
def test_pick_sizes_converts_tuple_fields_from_their_annotation(given, expected):
    sizes = pick_sizes({"smoke": _Sizes(), "default": _Sizes(seeds=9)}, True, **given)
    for name, value in expected.items():
        assert getattr(sizes, name) == value


def test_pick_sizes_refuses_unknown_fields_and_modes():
    with pytest.raises(ValueError, match="unknown size overrides"):
        pick_sizes({"smoke": _Sizes()}, True, radius=1)
    with pytest.raises(ValueError, match="no 'default' sizes"):
        pick_sizes({"smoke": _Sizes()}, False)
