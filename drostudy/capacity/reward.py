"""Capacity axis of the reward models (issue #25): notebook 02's paired experiment with MiniLM's top blocks
trained too, at the headline settings only.

A capacity point is the number of trainable top blocks of the encoder: notebook 02 trains the pooler and
the scalar head on a frozen MiniLM (`frozen_layers` 6 of 6, "0 trainable blocks"); here the top 1 and 2
blocks are trained as well (`frozen_layers` 5 and 4). Every run uses notebook 02's cached engine
(drostudy.reward.fast): the input of the first trainable block is computed once per text (the whole
sequence, 384 floats a token, when a block is trained; the [CLS] position only when none is) and shared by
every seed and setting of that capacity point; the trainable blocks run on it in every step.

Settings per point, on split A (notebook 02's primary split) and on the most severe split (`SEVERE_SPLIT`):
`ordinary`, the TV ball over pairs at notebook 02's primary radius (`tv 0.5`) and the same ball over the
training domains (`group tv 0.5`). A seed fixes the training pairs, the head initialisation and the batch
order, the same in every setting and at every capacity point (the trainable blocks start from the
pretrained weights), so each setting is compared with ordinary training seed by seed at each capacity.

    sizes = capacity.reward.pick(SMOKE, seeds=SEEDS)
    configs = capacity.reward.plan(sizes)
    runs = capacity.reward.run(configs, folder)
    table = comparisons_table(capacity.reward.results(runs))
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pandas as pd

from drostudy.analysis.capacity import capacity_stage
from drostudy.analysis.reward_grid import result_rows
from drostudy.config import pick_sizes
from drostudy.reward import study
from drostudy.reward.cached_runs import CachedRuns
from drostudy.reward.run import RMConfig
from drostudy.runs import run_all, run_folder
from drostudy.threads import torch_threads

# The split where ordinary training loses the most accuracy out of distribution: ordinary's ID-mean minus
# OOD-mean accuracy (drostudy.analysis.reward_grid.severity) in the committed
# results/02_reward_model_robustness.json ("severity", default sizes, 0 trainable blocks): A 0.105, B 0.080,
# C 0.157 (C trains on math and reasoning and holds out code, knowledge and safety).
SEVERE_SPLIT = "C"
LEVELS = ("example", "group")  # the ball over the batch's pairs, or over its training domains
BLOCKS = {"minilm-l6": 6, "tiny-bert": 2}  # transformer blocks of the reward backbones the study names
# the fields of notebook 02's Sizes that this axis shares with it (drostudy.reward.study.base_config)
TRAINING_FIELDS = (
    "model",
    "n_train",
    "n_eval",
    "steps",
    "learning_rate",
    "batch_size",
    "truncate_length",
)
_NOTEBOOK_02 = study.PRESETS["default"]  # the sizes shared with notebook 02 default to its own


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The reward models' capacity axis in one mode (PRESETS): capacity points, splits, settings, seeds and
    the training sizes of notebook 02 they share."""

    seeds: int = 10
    """paired seeds 0, 1, ..., seeds - 1 at every capacity point, split and setting (a point may run more:
    frozen_seeds). The sd of the paired OOD-mean difference (tv 0.5 - ordinary, split A) was 0.025 at 1
    trainable block in a pilot of 3 seeds (0.019-0.023 at 0 blocks in notebook 02's committed
    comparisons): 9 seeds reach the half-width 0.02, 10 leave a margin (benchmarks/bench_capacity_reward.py)"""
    frozen_seeds: dict[int, int] = dataclasses.field(default_factory=dict)
    """paired seeds at a capacity point named here (its `frozen_layers`; at least `seeds`); any other point
    runs `seeds`. A point that spreads wider needs more for the same half-width"""
    frozen_layers: tuple[int, ...] = (6, 5, 4)
    """the capacity points: encoder blocks kept frozen (6 of MiniLM's 6 = notebook 02's reward models).
    CPU seconds a run, one thread: 1.1 at 6 (notebook 02); 7.1 at 5, where the top block runs at [CLS]
    only with its keys and values folded into the query (19.8 before that fold, same run of
    benchmarks/bench_capacity_reward.py --projected, same accuracies); 122 at 4 (110 training, 12
    evaluation; block 4 runs at every position, forward and backward), on 2 threads (WHOLE_BLOCK_THREADS)"""
    primary_split: str = study.PRIMARY_SPLIT
    """notebook 02's primary split (drostudy.reward.study.SPLITS)"""
    severe_split: str = SEVERE_SPLIT
    """the most severe split of notebook 02's committed results (SEVERE_SPLIT says how it was found)"""
    radius: float = _NOTEBOOK_02.headline_radius
    """the TV radius of both robust settings (notebook 02's primary, HEADLINE_RADIUS)"""
    levels: tuple[str, ...] = LEVELS
    """where the ball runs besides ordinary: example (`tv 0.5`), group (`group tv 0.5`)"""
    model: str = _NOTEBOOK_02.model
    """reward backbone (drostudy.models), as notebook 02"""
    n_train: int = _NOTEBOOK_02.n_train
    """training pairs per run, as notebook 02"""
    n_eval: int = _NOTEBOOK_02.n_eval
    """test pairs per domain; 0 = the whole test split of every domain, as notebook 02"""
    steps: int = _NOTEBOOK_02.steps
    """optimiser steps (6 passes over the pairs), as notebook 02"""
    learning_rate: float = _NOTEBOOK_02.learning_rate
    """AdamW's rate for everything trained (pooler, head and the trainable blocks), as notebook 02"""
    batch_size: int = _NOTEBOOK_02.batch_size
    """pairs per step: the worst case is taken over this many"""
    truncate_length: int = _NOTEBOOK_02.truncate_length
    """tokens per prompt + response text, as notebook 02"""

    def seeds_at(self, frozen_layers: int) -> int:
        """The paired seeds at the capacity point `frozen_layers`: its frozen_seeds, at least `seeds`."""
        return max(self.seeds, self.frozen_seeds.get(frozen_layers, 0))


PRESETS = {
    # tiny random 2-block model and data, for the test suite (numbers meaningless)
    "smoke": Sizes(
        seeds=2,
        frozen_layers=(2, 1),
        model="tiny-bert",
        n_train=48,
        n_eval=16,
        steps=3,
        truncate_length=64,
    ),
    # 1 trainable block spread wider on its 10 seeds than in the pilot: sd 0.031 (tv 0.5 - ordinary, split A,
    # OOD mean), which needs 12 seeds for the half-width 0.02; 16 leave room. Set from the spread alone,
    # before the added seeds ran.
    "default": Sizes(frozen_seeds={5: 16}),
    "full": Sizes(seeds=16, frozen_layers=(6, 5, 4, 2)),
}


def pick(smoke: bool, full: bool = False, **overrides) -> Sizes:
    """The sizes of the mode (drostudy.config.pick_sizes) with every override that is not None; a tuple
    field also takes a comma-separated string ("6,5"), as a notebook parameter passes it."""
    sizes = pick_sizes(PRESETS, smoke, full, **overrides)
    blocks = n_blocks(sizes.model)
    bad = [f for f in sizes.frozen_layers if not 1 <= f <= blocks]
    if bad or not sizes.frozen_layers:
        raise ValueError(f"frozen_layers must be in 1..{blocks} for {sizes.model!r}; got {bad or '()'}")
    unknown = [lv for lv in sizes.levels if lv not in LEVELS]
    if unknown:
        raise ValueError(f"unknown level(s) {unknown}; expected some of {list(LEVELS)}")
    for split in splits(sizes):
        study.split_domains(split)  # raises on an unknown split
    return sizes


def splits(sizes: Sizes) -> tuple[str, ...]:
    """The primary split, then the severe one (once if they are the same)."""
    return tuple(dict.fromkeys((sizes.primary_split, sizes.severe_split)))


@functools.cache
def n_blocks(model: str) -> int:
    """Transformer blocks of reward backbone `model` (loaded once for a name not in BLOCKS)."""
    if model in BLOCKS:
        return BLOCKS[model]
    from drostudy.models import load_reward_model

    return len(load_reward_model(model)[0].base_model.encoder.layer)


def base_config(sizes: Sizes, frozen_layers: int) -> RMConfig:
    """Notebook 02's RMConfig (drostudy.reward.study.base_config) at `sizes` and this capacity point."""
    notebook = dataclasses.replace(
        study.PRESETS["default"], **{k: getattr(sizes, k) for k in TRAINING_FIELDS}
    )
    return dataclasses.replace(study.base_config(notebook), frozen_layers=frozen_layers)


def settings(sizes: Sizes) -> list[dict]:
    """The RMConfig fields of each setting: ordinary, then the TV ball at each level."""
    return [{}] + [
        {"divergence": "tv", "radius": float(sizes.radius), "level": lv} for lv in sizes.levels
    ]


def plan(sizes: Sizes) -> list[tuple[str, RMConfig]]:
    """(setting label, config) of every run, seeds outermost, then capacity point, split and setting
    (ordinary first): a seed's runs all share its training pairs, head initialisation and batch order. A
    point runs its `sizes.seeds_at` seeds: the first seeds of a point with more are the others' seeds."""
    out = []
    for seed in range(max(map(sizes.seeds_at, sizes.frozen_layers))):
        for frozen in [f for f in sizes.frozen_layers if seed < sizes.seeds_at(f)]:
            base = base_config(sizes, frozen)
            for split in splits(sizes):
                for fields in settings(sizes):
                    config = dataclasses.replace(base, seed=seed, **study.split_domains(split), **fields)
                    out.append((config.setting, config))
    return out


def _get(config, name: str):
    return config[name] if isinstance(config, dict) else getattr(config, name)


def capacity(config) -> str:
    """The capacity point of a run's config (an RMConfig or its dict): "0 trainable blocks", "1 trainable
    block", ..."""
    trained = n_blocks(_get(config, "model")) - int(_get(config, "frozen_layers"))
    return f"{trained} trainable block{'' if trained == 1 else 's'}"


def split_of(config) -> str:
    """The study's split (drostudy.reward.study.SPLITS) whose domains `config` trains on and holds out."""
    domains = (tuple(_get(config, "train_domains")), tuple(_get(config, "eval_domains")))
    for name, split in study.SPLITS.items():
        if split == domains:
            return name
    raise ValueError(f"train/eval domains {domains} are none of the splits {study.SPLITS}")


def stage(config) -> str:
    """`rm <split> · <capacity>`: the paired experiment a run belongs to (notebook 02's stage name, at
    this capacity point)."""
    return capacity_stage(study.stage(split_of(config), 0.0), capacity(config))


def capacities(configs: list[tuple[str, RMConfig]]) -> list[str]:
    """The capacity points of `configs`, in plan order."""
    return list(dict.fromkeys(capacity(c) for _, c in configs))


def _cache_key(config: RMConfig) -> tuple:
    """What one CachedRuns serves: the model, its frozen blocks, the truncation and the test pairs."""
    return (config.model, config.frozen_layers, config.truncate_length, config.n_eval)


def _warm(shared: CachedRuns, configs: list[RMConfig]) -> None:
    """Cache the frozen part's output for every training pair of `configs` (in plan order), then for the
    test pairs: the texts fall into the same encoding batches whichever runs a resumed study has left, so a
    run's numbers do not depend on which ran before it."""
    for config in configs:
        shared.features.pairs(shared.train_pairs(config))
    shared.features.pairs(shared.test)


def _finished(folder: str | Path | None, labelled: list[tuple[str, RMConfig]]) -> bool:
    """Whether every run already has its metrics.json under `folder` (then no cache is built)."""
    if folder is None:
        return False
    return all((run_folder(folder, label, c) / "metrics.json").exists() for label, c in labelled)


def run(configs: list[tuple[str, RMConfig]], folder: str | Path | None) -> list[dict]:
    """Run (or resume from `folder`; None: nothing written) every config of `plan`, one capacity point at a
    time: one CachedRuns per point (its cache, about 1 GB for MiniLM with a trainable block, is dropped
    before the next point's is built), each run resumable in its own folder `<stage> | <setting>`.
    Returns the metrics dicts in the order of `configs`, each `label` the setting label of `plan`."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, config) in enumerate(configs):
        groups.setdefault(_cache_key(config), []).append(i)
    out: list[dict] = [{} for _ in configs]
    for indices in groups.values():
        labelled = [(f"{stage(configs[i][1])} | {configs[i][0]}", configs[i][1]) for i in indices]
        shared = CachedRuns(labelled[0][1])
        if not _finished(folder, labelled):
            _warm(shared, [c for _, c in labelled])
        with torch_threads(threads(labelled[0][1])):
            runs = run_all(
                labelled, folder, shared.train, desc=f"reward models, {capacity(labelled[0][1])}"
            )
        for i, metrics in zip(indices, runs, strict=True):
            out[i] = metrics | {"label": configs[i][0]}
        del shared  # free this capacity point's cache before the next one's
    return out


# torch threads of a run that trains a whole block below the top one: a fixed count, because its numbers depend
# on it (after 10 steps at 1 and 2 threads the weights differ, even under the study's pinned MKL numerics), so
# a fixed count keeps them the same on every machine. Two pay: 40 training steps at 2 trainable blocks took 13.5
# s of wall time at 2 threads and 24.7-26.8 s at 1, for the same CPU time (same run, quiet 2-core machine).
WHOLE_BLOCK_THREADS = 2


def threads(config: RMConfig) -> int:
    """torch threads for the runs of `config`'s capacity point: 1 where at most the top block trains (it
    runs at [CLS] only: notebook 02's choice, a second thread cost more CPU for bitwise the same margins),
    WHOLE_BLOCK_THREADS where a whole block below it trains, whose products over every token share well."""
    return 1 if config.frozen_layers >= n_blocks(config.model) - 1 else WHOLE_BLOCK_THREADS


def results(runs: list[dict]) -> pd.DataFrame:
    """The long table (drostudy.analysis.stats.RESULT_COLUMNS) of test accuracy per run and domain, plus
    each split's mean, with `stage` = `rm <split> · <capacity>`: stats.comparisons_table then compares
    every setting with ordinary training per split and capacity point."""
    relabelled = [r | {"label": f"{stage(r['config'])} | {r['label']}"} for r in runs]
    return result_rows(relabelled)


def primary(sizes: Sizes) -> list[tuple[str, str]]:
    """(stage, setting) of the named comparison at each capacity point, before the run: the TV ball over
    pairs against ordinary training on the primary split, OOD mean (notebook 02's primary)."""
    configs = [base_config(sizes, f) for f in sizes.frozen_layers]
    split = study.split_domains(sizes.primary_split)
    balls = [
        dataclasses.replace(c, divergence="tv", radius=float(sizes.radius), **split) for c in configs
    ]
    return [(stage(ball), ball.setting) for ball in balls]
