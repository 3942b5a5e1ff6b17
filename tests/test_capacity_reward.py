"""The reward models' capacity axis (drostudy.capacity.reward): its plan, pairing, labels, the cache it
builds per capacity point, a smoke-size run end to end and resumed, and its results rows."""

import dataclasses
import json
from pathlib import Path

import pytest

from drostudy.analysis import stats
from drostudy.capacity import reward as cap
from drostudy.reward import study
from drostudy.reward.cached_runs import CachedRuns

RESULTS = Path(__file__).resolve().parent.parent / "results"
SETTINGS = ["ordinary", "tv 0.5", "group tv 0.5"]


def test_default_plan_crosses_seeds_capacities_splits_and_the_headline_settings():
    sizes = cap.pick(False)
    configs = cap.plan(sizes)
    assert len(configs) == sum(sizes.seeds_at(f) for f in sizes.frozen_layers) * 2 * 3
    assert [c.seed for _, c in configs] == sorted(c.seed for _, c in configs)  # seeds outermost
    assert cap.capacities(configs) == ["0 trainable blocks", "1 trainable block", "2 trainable blocks"]
    assert sorted({cap.split_of(c) for _, c in configs}) == ["A", "C"]
    assert [label for label, _ in configs[:3]] == SETTINGS
    for label, config in configs:
        assert label == config.setting and config.engine == "cached"
    assert len({(label, c) for label, c in configs}) == len(configs)  # no run twice


def test_a_point_that_spreads_wider_runs_more_seeds_and_shares_the_first_ones():
    sizes = dataclasses.replace(cap.pick(False), seeds=2, frozen_seeds={5: 1, 4: 3}, levels=())
    assert [sizes.seeds_at(f) for f in sizes.frozen_layers] == [2, 2, 3]  # at least `seeds`
    points = [(c.seed, c.frozen_layers) for _, c in cap.plan(sizes)[::2]]  # one per split, ordinary only
    assert points == [(0, 6), (0, 5), (0, 4), (1, 6), (1, 5), (1, 4), (2, 4)]  # seeds outermost
    picked = cap.pick(False, frozen_layers="6,4,3")  # as the FROZEN_LAYERS parameter passes it
    assert picked.seeds_at(3) == picked.seeds and picked.seeds_at(4) == cap.pick(False).seeds_at(4)


def test_capacity_zero_is_notebook_02s_reward_model():
    notebook = study.base_config(study.pick(False))
    assert cap.base_config(cap.pick(False), 6) == notebook
    assert cap.base_config(cap.pick(False), 5) == dataclasses.replace(notebook, frozen_layers=5)
    assert cap.primary(cap.pick(False))[0] == (
        "rm A · 0 trainable blocks",
        study.primary(study.pick(False))[1],
    )


def test_a_seed_fixes_everything_but_capacity_split_and_setting():
    configs = [c for _, c in cap.plan(cap.pick(False, seeds=2))]
    for seed in (0, 1):
        own = [c for c in configs if c.seed == seed]
        varied = {"frozen_layers", "train_domains", "eval_domains", "divergence", "radius", "level"}
        fixed = {f.name for f in dataclasses.fields(own[0])} - varied
        assert len({tuple(getattr(c, f) for f in sorted(fixed)) for c in own}) == 1


def test_the_severe_split_is_the_committed_results_most_severe():
    severity = json.loads((RESULTS / "02_reward_model_robustness.json").read_text())["severity"]
    plain = {stage: value for stage, value in severity.items() if "noise" not in stage}
    assert max(plain, key=plain.get) == study.stage(cap.SEVERE_SPLIT, 0.0)
    assert cap.pick(False).severe_split == cap.SEVERE_SPLIT


def test_capacity_names_and_stages_read_from_a_config_or_its_dict():
    config = cap.base_config(cap.pick(False), 5)
    assert cap.capacity(config) == cap.capacity(dataclasses.asdict(config)) == "1 trainable block"
    assert cap.stage(dataclasses.asdict(config)) == "rm A · 1 trainable block"
    assert cap.capacity(dataclasses.replace(config, frozen_layers=4)) == "2 trainable blocks"


def test_one_thread_unless_a_whole_block_below_the_top_trains():
    sizes = cap.pick(False)
    assert [cap.threads(cap.base_config(sizes, f)) for f in (6, 5, 4, 2)] == [1, 1, 2, 2]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(frozen_layers="6,7"), "frozen_layers"),
        (dict(frozen_layers="0"), "frozen_layers"),
        (dict(severe_split="D"), "unknown split"),
        (dict(levels="pairs"), "unknown level"),
    ],
)
def test_pick_refuses_what_cannot_run(overrides, match):
    with pytest.raises(ValueError, match=match):
        cap.pick(False, **overrides)


def test_the_cache_keeps_whole_texts_below_a_trainable_block_and_only_cls_otherwise():
    sizes = cap.pick(True)
    lengths = {}
    for frozen in (2, 1):
        config = dataclasses.replace(cap.plan(sizes)[0][1], frozen_layers=frozen)
        shared = CachedRuns(config)
        chosen, _ = shared.features.pairs(shared.train_pairs(config).select(range(4)))
        lengths[frozen] = [len(x) for x in chosen]
        assert all(x.shape[1] == shared.model.config.hidden_size for x in chosen)
    assert lengths[2] == [1, 1, 1, 1]  # every block frozen: the pooler reads [CLS] alone
    assert min(lengths[1]) > 1  # a trainable block reads every position


def test_smoke_run_end_to_end_its_results_and_its_resume(tmp_path, monkeypatch):
    sizes = cap.pick(True)
    configs = cap.plan(sizes)
    runs = cap.run(configs, tmp_path)
    assert [r["label"] for r in runs] == [label for label, _ in configs]
    # a seed draws the same training pairs in every setting and at every capacity point of a split
    for seed in range(sizes.seeds):
        for split in ("A", "C"):
            ids = {
                tuple(r["pair_weights"]["id"])
                for r in runs
                if r["config"]["seed"] == seed and cap.split_of(r["config"]) == split
            }
            assert len(ids) == 1
    rows = cap.results(runs)
    assert list(rows.columns) == list(stats.RESULT_COLUMNS)
    stages = {f"rm {s} · {c}" for s in ("A", "C") for c in ("0 trainable blocks", "1 trainable block")}
    assert set(rows.stage) == stages
    table = stats.comparisons_table(rows)
    ood = table[(table.split == "ood") & (table.domain == "mean")]
    assert len(ood) == len(stages) * 2 and set(ood.setting) == {"tv 0.5", "group tv 0.5"}
    assert (ood.n_seeds == sizes.seeds).all()

    # the capacity points differ: the trained block moves the test margins
    def margins(point):
        return {
            (r["label"], r["config"]["seed"], cap.split_of(r["config"])): r["test_margins"]
            for r in runs
            if cap.capacity(r["config"]) == point
        }

    frozen, trained = margins("0 trainable blocks"), margins("1 trainable block")
    assert frozen.keys() == trained.keys()
    assert all(frozen[key] != trained[key] for key in frozen)

    def no_cache(*args):
        raise AssertionError("a finished study builds no cache")

    monkeypatch.setattr(cap, "_warm", no_cache)
    again = cap.run(configs, tmp_path)
    assert [r["test_margins"] for r in again] == [r["test_margins"] for r in runs]
