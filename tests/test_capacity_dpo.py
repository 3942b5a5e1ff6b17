"""DPO's capacity axis (drostudy.capacity.dpo): sizes and points, the plan's shape, labels and pairing
(the base point is notebook 03's own config; a seed's pairs nest across points), and a smoke-size study
on a tiny random model end to end: runs, resuming from another study's folder, the results rows."""

import dataclasses

import pytest
import torch

from drostudy.analysis import stats
from drostudy.capacity import dpo
from drostudy.dpo import study
from drostudy.dpo.run import build_data
from drostudy.models import load_policy

LOSS_FIELDS = ("loss", "divergence", "radius")  # what tells a point's settings apart


def test_pick_takes_points_and_methods_as_notebook_parameters_and_rejects_bad_ones():
    assert dpo.pick(False) == dpo.PRESETS["default"]
    sizes = dpo.pick(True, points="4:6:96, 8:24:336", methods="tv", seeds=None)
    assert sizes.points == ("4:6:96", "8:24:336") and sizes.methods == ("tv",)
    assert sizes.seeds == dpo.PRESETS["smoke"].seeds
    assert dpo.point("8:24:336") == dpo.Point(lora_layers=8, steps=24, n_train=336)
    for bad in ("8:24", "8:0:336", "eight:24:336"):
        with pytest.raises(ValueError, match="LAYERS:STEPS:PAIRS"):
            dpo.pick(False, points=bad)
    with pytest.raises(ValueError, match="unknown method"):
        dpo.pick(False, methods="tv,wdpo")


def test_plan_runs_every_seed_point_and_setting_seeds_outermost():
    sizes = dpo.pick(False, seeds=3)
    plan = dpo.plan(sizes)
    per_seed = len(sizes.points) * 3
    assert len(plan) == sizes.seeds * per_seed
    assert [label for label, _ in plan[:3]] == ["ordinary", "tv 0.2", "group_eg"]
    assert [c.seed for _, c in plan] == [s for s in range(3) for _ in range(per_seed)]
    names = dpo.capacities(plan)
    assert names == [
        "LoRA 4 layers, 6 steps, 96 pairs",
        "LoRA 4 layers, 24 steps, 336 pairs",
        "LoRA 8 layers, 24 steps, 336 pairs",
    ]
    for label, config in plan:
        assert label == config.setting
        assert dpo.capacity(config) == dpo.capacity(dataclasses.asdict(config))
    group = next(c for label, c in plan if label == "group_eg")
    assert (group.group_step, group.reg, group.beta) == (5.0, 0.1, 0.1)  # notebook 03's parameters


def test_the_base_point_is_notebook_03s_own_config_so_its_runs_can_be_reused():
    sizes = study.pick(False)
    base = study.base_config(sizes, "math,code", beta=0.1, reg=0.1, group_step=5.0, label_smoothing=0.1)
    methods = study.select_methods(
        study.method_overrides({"tv": 0.2, "kl": 0.1, "chi2": 0.25}, 3.0), "tv"
    )
    notebook_03 = {(label, c.seed): c for label, c in study.plan(base, methods, sizes.seeds)}
    plan = dpo.plan(dpo.pick(False))
    base_runs = [
        (label, c) for label, c in plan if dpo.point("4:6:96") == (c.lora_layers, c.steps, c.n_train)
    ]
    shared = [(label, c) for label, c in base_runs if label != "group_eg"]
    assert len(shared) == 2 * dpo.DEFAULT.seeds
    assert all(notebook_03[(label, c.seed)] == c for label, c in shared)


def test_a_seed_is_the_same_data_and_init_at_every_point_and_setting():
    plan = dpo.plan(dpo.pick(True))
    for seed in range(2):
        runs = [c for _, c in plan if c.seed == seed]
        ignored = (*LOSS_FIELDS, *dpo.Point._fields)
        common = {
            tuple((k, v) for k, v in dataclasses.asdict(c).items() if k not in ignored) for c in runs
        }
        assert len(common) == 1  # only capacity and loss differ within a seed
    _, tokenizer = load_policy("tiny-llama")
    small, large = (c for label, c in plan if c.seed == 1 and label == "ordinary")
    assert small.n_train < large.n_train
    (small_train, small_test), (large_train, large_test) = (
        build_data(c, tokenizer) for c in (small, large)
    )
    prompts = {str(r["prompt"]) for r in large_train}
    assert all(str(r["prompt"]) in prompts for r in small_train)  # the smaller point's pairs nest
    assert small_test == large_test


def test_a_smoke_study_runs_resumes_from_another_folder_and_gives_rows_per_capacity(tmp_path):
    sizes = dpo.pick(True, seeds=2, points="1:2:32,2:3:32", methods="tv,group_eg")
    sizes = dataclasses.replace(sizes, n_eval=4)
    plan = dpo.plan(sizes)
    runs = dpo.run(plan, tmp_path / "first")
    assert len(runs) == len(plan) == 12
    assert all(r["per_domain"]["reasoning"]["kl"] >= 0 for r in runs)  # every run reports its KL
    results = dpo.results(runs)
    assert list(results.columns) == list(stats.RESULT_COLUMNS)
    assert set(results.stage) == {f"dpo · {name}" for name in dpo.capacities(plan)}
    assert set(results.metric) == {"accuracy", "margin", "kl"}
    table = stats.comparisons_table(results, lower_is_better=("kl",))
    ood = table[(table.split == "ood") & (table.domain == "mean") & (table.metric == "accuracy")]
    assert len(ood) == 2 * 2 and set(ood.setting) == {"tv 0.2", "group_eg"}  # per point, vs its ordinary
    assert (ood.n_seeds == 2).all()
    travelled = dpo.kl_travelled(results)
    assert len(travelled) == 2 * 3 and (travelled[["kl_id", "kl_ood"]] >= 0).all().all()
    assert list(dict.fromkeys(travelled.stage)) == [f"dpo · {p}" for p in dpo.capacities(plan)]
    # a second study copies the finished runs (the first point only) and runs the others
    first_point = [(label, c) for label, c in plan if c.lora_layers == 1]
    again = dpo.run(first_point, tmp_path / "second", reuse=tmp_path / "first")
    before = {(r["label"], r["seed"]): r["timings"] for r in runs if r["config"]["lora_layers"] == 1}
    assert {(r["label"], r["seed"]): r["timings"] for r in again} == before  # read, not trained again


def test_a_cache_filled_from_a_deeper_one_holds_the_same_numbers_as_a_direct_fill():
    from peft import get_peft_model

    from drostudy.dpo import fast
    from drostudy.runs import lora_config

    config = dpo.plan(dpo.pick(True, points="1:2:32", methods="tv"))[0][1]
    model, tokenizer = load_policy(config.model)
    train, test = build_data(config, tokenizer)
    model = get_peft_model(model, lora_config(config, model.config.num_hidden_layers))
    pairs, _ = fast.encode_pairs(tokenizer, train, config.max_length)
    sequences = [s for p in pairs[:8] for s in p]
    direct = fast.TrunkCache(model, 1)
    direct.fill(sequences)
    caches = dpo.ChainedTrunkCaches(lora_layers=(1, 2))  # first trainable blocks 1 and 0 of 2
    chained = caches.get(model, config.model, 1)
    chained.fill(sequences)
    assert chained.below is caches.get(model, config.model, 0) and len(chained.below) == len(direct)
    assert all(torch.equal(chained._store[s.ids], direct._store[s.ids]) for s in sequences)
    assert torch.equal(chained.reference_logps(pairs[:8])[0], direct.reference_logps(pairs[:8])[0])
