"""Ordinary reward-model training along its own regularisation knobs (#24): label smoothing of the
Bradley-Terry loss, weight decay, the knob settings' names in notebook 02's plan, and their place outside the
plain comparison family."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from drostudy.analysis import paired, stats
from drostudy.analysis import reward_grid as rg
from drostudy.losses import bradley_terry_loss, robust_bradley_terry_loss
from drostudy.reward import study
from drostudy.reward.objective import bradley_terry_objective, smoothed_bradley_terry_loss
from drostudy.reward.run import RMConfig, train_reward_model


def rewards():
    chosen = torch.tensor([0.3, -1.2, 2.0, 0.0, 5.0], dtype=torch.float64)
    rejected = torch.tensor([0.1, 0.4, -1.0, 0.0, -3.0], dtype=torch.float64)
    return chosen, rejected


def test_label_smoothing_zero_is_the_ordinary_bradley_terry_loss_exactly():
    chosen, rejected = rewards()
    assert torch.equal(
        smoothed_bradley_terry_loss(chosen, rejected, 0.0), bradley_terry_loss(chosen, rejected)
    )
    for radius in (0.0, 0.5):
        plain = robust_bradley_terry_loss(chosen, rejected, "tv", radius)
        ours = bradley_terry_objective(chosen, rejected, "tv", radius, "example", label_smoothing=0.0)
        assert torch.equal(ours.loss, plain.loss) and torch.equal(ours.weights, plain.weights)


def test_label_smoothing_matches_a_hand_computed_value():
    # margin 1, eps 0.1: 0.9 log(1 + e^-1) + 0.1 log(1 + e^1) = 0.9 * 0.3132617 + 0.1 * 1.3132617
    loss = smoothed_bradley_terry_loss(torch.tensor([1.5]), torch.tensor([0.5]), 0.1)
    assert loss.item() == pytest.approx(
        0.9 * math.log1p(math.exp(-1)) + 0.1 * math.log1p(math.e), abs=1e-6
    )
    assert loss.item() == pytest.approx(0.4132617, abs=1e-6)
    # smoothing pulls the loss's minimum from an infinite margin to log((1 - eps) / eps)
    margins = torch.linspace(0, 6, 601)
    smoothed = smoothed_bradley_terry_loss(margins, torch.zeros(601), 0.1)
    best = float(margins[smoothed.argmin()])
    assert best == pytest.approx(math.log(9), abs=0.01)


def test_label_smoothing_changes_the_robust_objective_and_its_weights():
    chosen, rejected = rewards()
    plain = bradley_terry_objective(chosen, rejected, "tv", 0.5, "example")
    smooth = bradley_terry_objective(chosen, rejected, "tv", 0.5, "example", label_smoothing=0.2)
    assert smooth.loss > plain.loss  # every smoothed loss exceeds the plain one at a positive margin
    assert smooth.metrics["rewards/accuracy"] == plain.metrics["rewards/accuracy"] == 0.6


@pytest.mark.parametrize("value", [0.5, -0.1, 0.7, True, "0.1"])
def test_label_smoothing_outside_its_range_is_refused_by_name(value):
    with pytest.raises(ValueError, match="label_smoothing"):
        RMConfig(label_smoothing=value, engine="cached")


def test_weight_decay_must_be_non_negative_and_smoothing_needs_the_cached_engine():
    with pytest.raises(ValueError, match="weight_decay"):
        RMConfig(weight_decay=-1.0)
    with pytest.raises(ValueError, match="label_smoothing > 0 needs engine='cached'"):
        RMConfig(label_smoothing=0.1)
    assert RMConfig(weight_decay=3).weight_decay == 3.0


def test_weight_decay_and_label_smoothing_reach_the_cached_engine():
    base = RMConfig(model="tiny-bert", engine="cached", frozen_layers=2, n_train=32, n_eval=8, steps=4)
    base = dataclasses.replace(base, truncate_length=64, learning_rate=0.01)
    plain = train_reward_model(base)["test_margins"]
    assert train_reward_model(dataclasses.replace(base, weight_decay=0.0))["test_margins"] == plain
    for knob in (dict(weight_decay=50.0), dict(label_smoothing=0.3)):
        assert train_reward_model(dataclasses.replace(base, **knob))["test_margins"] != plain, knob


def test_knob_settings_are_named_along_their_knob_and_plain_at_the_default():
    assert RMConfig().setting == "ordinary"
    assert RMConfig(weight_decay=10.0).setting == "ordinary weight_decay 10"
    assert RMConfig(label_smoothing=0.1, engine="cached").setting == "ordinary label_smoothing 0.1"
    sizes = study.pick(False)
    curves = study.knob_curves(sizes)
    assert curves["steps"]["ordinary"] == sizes.steps
    assert set(curves) == {"weight_decay", "steps", "label_smoothing"}
    labels = [label for label, _ in study.grid(sizes)]
    for knob, curve in curves.items():
        for setting in curve:
            if setting != "ordinary":
                assert labels.count(f"rm A | {setting}") == sizes.headline_seeds, (knob, setting)
    assert len(labels) == len(set((label, c.seed) for label, c in study.grid(sizes)))  # no run twice
    assert study.PRIMARY_KNOB in curves


def test_steps_name_only_ordinary():
    base = study.base_config(study.pick(False))
    assert study.name(dataclasses.replace(base, steps=94), base) == "ordinary steps 94"
    with pytest.raises(ValueError, match="only ordinary"):
        study.name(dataclasses.replace(base, steps=94, radius=0.5), base)


def long_rows(settings: dict[str, tuple[float, float]], seeds=range(4)) -> pd.DataFrame:
    """Results rows of stage `rm A`: setting -> (id, ood) mean accuracy, shifted a little per seed."""
    rows = []
    for setting, (id_acc, ood_acc) in settings.items():
        for seed in seeds:
            for split, value in (("id", id_acc), ("ood", ood_acc)):
                noise = 0.003 * ((seed * 7 + len(setting)) % 5) if setting != "ordinary" else 0.0
                rows.append(
                    ("rm A", setting, seed, split, "mean", "accuracy", value + 0.01 * seed + noise)
                )
    return pd.DataFrame(rows, columns=["stage", "setting", "seed", "split", "domain", "metric", "value"])


def test_knob_settings_stay_out_of_the_plain_family():
    robust = {"ordinary": (0.75, 0.63), "tv 0.5": (0.74, 0.64), "tv 0.9": (0.72, 0.62)}
    knobs = {"ordinary weight_decay 10": (0.73, 0.62), "ordinary steps 47": (0.70, 0.60)}
    alone = rg.comparisons(long_rows(robust), ("rm A", "tv 0.5"))
    together = rg.comparisons(long_rows(robust | knobs), ("rm A", "tv 0.5"))
    pd.testing.assert_frame_equal(alone, together)


def test_matched_rows_per_knob_with_the_primary_unadjusted():
    robust = {"ordinary": (0.75, 0.63), "tv 0.5": (0.74, 0.64), "tv 0.9": (0.72, 0.62)}
    knobs = {"ordinary weight_decay 10": (0.73, 0.62), "ordinary weight_decay 30": (0.70, 0.60)}
    knobs |= {"ordinary steps 47": (0.71, 0.60)}
    curves = {
        "weight_decay": {
            "ordinary": 0.0,
            "ordinary weight_decay 10": 10.0,
            "ordinary weight_decay 30": 30.0,
        },
        "steps": {"ordinary": 282.0, "ordinary steps 47": 47.0},
    }
    table, diagnostics = rg.matched(long_rows(robust | knobs), "rm A", curves, ("rm A", "tv 0.5"))
    assert set(table.baseline) == {
        "ordinary matched on id accuracy (weight_decay)",
        "ordinary matched on id accuracy (steps)",
    }
    assert set(table.setting) == {"tv 0.5", "tv 0.9"}  # no knob setting is matched against a knob
    assert set(diagnostics.setting) == {"tv 0.5", "tv 0.9"}
    primary = table[(table.setting == "tv 0.5") & table.baseline.str.endswith("(weight_decay)")].iloc[0]
    assert primary.mean_diff > 0 and primary.n_seeds >= 2


def test_frontier_markdown_names_the_matched_comparison_and_a_knob_that_does_not_bracket():
    from drostudy.analysis import frontier

    robust = {"ordinary": (0.75, 0.63), "tv 0.5": (0.74, 0.64), "tv 0.9": (0.72, 0.62)}
    knobs = {"ordinary weight_decay 10": (0.73, 0.62), "ordinary weight_decay 30": (0.70, 0.60)}
    knobs |= {"ordinary label_smoothing 0.1": (0.76, 0.60)}  # above every robust ID: brackets none
    curves = {
        "weight_decay": {
            "ordinary": 0.0,
            "ordinary weight_decay 10": 10.0,
            "ordinary weight_decay 30": 30.0,
        },
        "label_smoothing": {"ordinary": 0.0, "ordinary label_smoothing 0.1": 0.1},
    }
    rows = long_rows(robust | knobs)
    with pytest.warns(UserWarning, match="0 bracketed seeds, fewer than 2"):
        table, diagnostics = rg.matched(rows, "rm A", curves, ("rm A", "tv 0.5"))
    tv = {"ordinary": 0.0, "tv 0.5": 0.5, "tv 0.9": 0.9}
    points = frontier.frontier_points(
        rows, {f"ordinary ({k})": c for k, c in curves.items()} | {"tv": tv}
    )
    text = rg.frontier_markdown(points, table, diagnostics, ("rm A", "tv 0.5"), "weight_decay")
    assert text.startswith(
        "**Matched** (tv 0.5 vs ordinary at the same ID-mean accuracy along weight_decay"
    )
    smoothing = next(line for line in text.splitlines() if "(label_smoothing)" in line)
    assert "it does not bracket most of them" in smoothing
    decay = next(line for line in text.splitlines() if "(weight_decay):" in line)
    assert "does not bracket" not in decay and "brackets 8 of 8" in decay


def test_no_knob_grid_gives_no_matched_rows_and_says_so():
    sizes = study.pick(False, weight_decay_grid="", steps_grid="", label_smoothing_grid="")
    assert study.knob_curves(sizes) == {}
    assert not [label for label, _ in study.grid(sizes) if "| ordinary " in label]
    rows = long_rows({"ordinary": (0.75, 0.63), "tv 0.5": (0.74, 0.64)})
    table, diagnostics = rg.matched(rows, "rm A", {}, ("rm A", "tv 0.5"))
    assert table.empty and diagnostics.empty and tuple(table.columns) == stats.COLUMNS
    text = rg.frontier_markdown(
        pd.DataFrame(columns=["curve"]), table, diagnostics, ("rm A", "tv 0.5"), "steps"
    )
    assert text.startswith("**Matched**: no comparison")


def test_seeds_needed_for_a_half_width_target():
    def needed(half_width, n_seeds, target):
        return paired.seeds_needed(paired.paired_sd(half_width, n_seeds), target)

    assert needed(0.02, 10, 0.0201) == 10  # the target already met: the seeds it has
    assert needed(0.02, 10, 0.0199) == 11
    assert needed(0.03, 10, 0.015) > 4 * 10 * 0.75  # half the width: about 4x the seeds
