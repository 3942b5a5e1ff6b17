"""Notebook 02's experiment, planned and run: does a robust Bradley-Terry reward model keep its accuracy out
of distribution better than ordinary training?

The plan: the sizes of each mode (`Sizes`, `PRESETS`, picked by `pick`), the train/held-out splits of the
domains (`SPLITS`), the settings compared with ordinary training (`headline`, `radius_axis`), the seeds, and
the stages they form (`experiments`). `grid(sizes)` lists every run as (label, RMConfig); `run(sizes,
folder)` caches the frozen features once and runs the grid through drostudy.runs.run_all. What the finished
runs say is drostudy.analysis.reward_grid's part.

A stage is one paired experiment, `rm <split>` or `rm <split> noise <fraction>`, and a run's label is
`<stage> | <setting>` (the setting named by drostudy.config.setting_label: `ordinary`, `tv 0.5`,
`group tv 0.5`, `doro tv 0.5 eps 0.1`). Within a stage every setting runs with the seeds of `ordinary`, and a
seed fixes the training subset, the label flips, the head initialisation and the batch order; every run is
tested on the same pairs. So the analysis compares each setting with ordinary training seed by seed.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

from drostudy.config import pick_sizes, setting_label
from drostudy.reward.cached_runs import CachedRuns
from drostudy.reward.run import RMConfig
from drostudy.runs import run_all
from drostudy.threads import torch_threads

# train domains -> held-out domains. A: the study's default; B and C move math/code and safety across.
SPLITS = {
    "A": (("math", "code", "knowledge"), ("reasoning", "safety")),
    "B": (("reasoning", "knowledge", "safety"), ("math", "code")),
    "C": (("math", "reasoning"), ("code", "knowledge", "safety")),
}
STAGE = "rm"
# Ordinary training along its own regularisation knobs on split A. Measured at the default sizes on all 16
# seeds (ID-mean / OOD-mean accuracy; ordinary 0.745 / 0.641, the robust settings' ID 0.727-0.751):
# weight decay lowers ID accuracy and never raises it (10: 0.737 / 0.643, 30: 0.718 / 0.653, 100: 0.698 /
# 0.658); fewer steps lower it (47: 0.704 / 0.649, 94: 0.717 / 0.650, 188: 0.736 / 0.645) and 564 (12
# passes) raises it (0.752 / 0.627; 1128 steps gave no more, 0.751 / 0.601); label smoothing raises ID a
# little and lowers OOD (0.1: 0.749 / 0.623, 0.3: 0.752 / 0.611). Of the 138 robust runs of split A, the
# steps curve brackets 109 on their seed, weight decay 74, label smoothing 45.
WEIGHT_DECAY_GRID = (10.0, 30.0, 100.0)
STEPS_GRID = (47, 94, 188, 564)
LABEL_SMOOTHING_GRID = (0.1, 0.3)
# The knob of the second named comparison (the primary setting matched on ID-mean accuracy): steps, the knob
# reaching both below and above ordinary's ID accuracy (on 4 seeds measured first it bracketed 3 of 4 tv 0.2
# runs, weight decay 1; on all 16 it brackets the most robust runs, above).
PRIMARY_KNOB = "steps"
PRIMARY_SPLIT = "A"  # the primary comparison, the radius axis and the label noise are on split A


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Notebook 02's sizes and settings in one mode (its parameters of the same names, in capitals). The
    defaults are the CPU study's: measured to fit its budget (about 25 minutes) on 2 cores."""

    seeds: int = 10
    """paired seeds per setting (measured: 10 give OOD-mean half-widths of 0.007-0.019)"""
    headline_seeds: int = 16
    """seeds of ordinary and the headline settings on split A (OOD-mean half-width under 0.015)"""
    model: str = "minilm-l6"
    """reward backbone (drostudy.models): a CPU-friendly 6-block BERT encoder with a new scalar head"""
    frozen_layers: int = 6
    """blocks frozen and cached once per text: all 6, so a run trains the pooler and head in ~2 s of CPU
    (training the top block too took 18 s a run: 10 seeds x 29 settings would not fit)"""
    n_train: int = 750
    """training pairs per run"""
    n_eval: int = 0
    """test pairs per domain; 0 = the whole test split of every domain"""
    steps: int = 282
    """optimiser steps: 6 passes of 47 batches over the 750 pairs (cheap on cached features)"""
    learning_rate: float = 1e-3
    """AdamW's rate, for the pooler and head only"""
    batch_size: int = 16
    """pairs per step: the worst case is taken over this many"""
    truncate_length: int = 128
    """tokens per prompt + response text; the prompt is cut from the left"""
    headline_radius: float = 0.5
    """the primary comparison's TV radius: where an earlier unpaired study's OOD curve was highest"""
    tv_radii: tuple[float, ...] = (0.1, 0.2, 0.35, 0.5, 0.7, 0.9)
    """the TV radius axis on split A, up to near the vertex (the headline radius runs once)"""
    smooth: str = "kl"
    """the smooth ball of the radius axis"""
    smooth_radii: tuple[float, ...] = (0.1, 0.3, 1.0, 2.0)
    """its radii (the KL vertex of a batch of 16 is ln 16, about 2.77)"""
    outlier_fraction: float = 0.1
    """DORO: the fraction of each batch's largest losses dropped before the worst case"""
    splits: tuple[str, ...] = ("A", "B", "C")
    """train/held-out splits (SPLITS), each with ordinary and the headline settings"""
    noise: tuple[float, ...] = (0.1, 0.2)
    """fractions of flipped training labels on split A, each a stage of its own (0 is run anyway)"""
    weight_decay_grid: tuple[float, ...] = WEIGHT_DECAY_GRID
    """ordinary training's AdamW weight decay on split A, on the headline seeds (0, plain ordinary, runs
    anyway); chosen so that ordinary's ID-mean accuracy brackets the robust settings' (drostudy.analysis.matched)"""
    steps_grid: tuple[int, ...] = STEPS_GRID
    """ordinary training's number of steps on split A (early stopping; `steps`, plain ordinary, runs anyway)"""
    label_smoothing_grid: tuple[float, ...] = LABEL_SMOOTHING_GRID
    """ordinary training's Bradley-Terry label smoothing on split A (0, plain ordinary, runs anyway)"""


PRESETS = {
    # tiny random model and data, for the test suite (numbers meaningless): one pass of 3 batches
    "smoke": Sizes(
        seeds=2,
        headline_seeds=3,
        model="tiny-bert",
        frozen_layers=2,
        n_train=48,
        n_eval=16,
        steps=3,
        truncate_length=64,
        tv_radii=(),
        smooth_radii=(0.5,),
        splits=("A", "B"),
        noise=(0.1,),
        weight_decay_grid=(30.0,),
        steps_grid=(1, 6),
        label_smoothing_grid=(0.2,),
    ),
    "default": Sizes(),
}


def pick(smoke: bool, **overrides) -> Sizes:
    """The sizes of the mode (drostudy.config.pick_sizes) with every override that is not None; a list
    field also takes a comma-separated string ("0.1,0.2"; "" for none), as a sweep passes it."""
    return pick_sizes(PRESETS, smoke, **overrides)


def base_config(sizes: Sizes) -> RMConfig:
    """The RMConfig every run starts from: the cached engine at `sizes`, ordinary training on split A."""
    return RMConfig(
        model=sizes.model,
        n_train=sizes.n_train,
        n_eval=sizes.n_eval,
        learning_rate=sizes.learning_rate,
        steps=sizes.steps,
        batch_size=sizes.batch_size,
        truncate_length=sizes.truncate_length,
        frozen_layers=sizes.frozen_layers,
        engine="cached",
    )


def split_domains(split: str) -> dict:
    """RMConfig fields that train on `split`'s domains and hold out the rest."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    train, held_out = SPLITS[split]
    return {"train_domains": train, "eval_domains": held_out}


def tv(radius: float) -> dict:
    return {"divergence": "tv", "radius": float(radius)}


def headline(sizes: Sizes) -> list[dict]:
    """The settings every stage compares with ordinary: the TV ball over pairs at the headline radius,
    the same ball over the training domains, and DORO with it."""
    ball = tv(sizes.headline_radius)
    return [ball, ball | {"level": "group"}, ball | {"outlier_fraction": sizes.outlier_fraction}]


def radius_axis(sizes: Sizes) -> list[dict]:
    """The further radii on split A: the TV axis (but the headline radius) and the smooth ball's."""
    axis = [tv(r) for r in sizes.tv_radii if float(r) != sizes.headline_radius]
    return axis + [{"divergence": sizes.smooth, "radius": float(r)} for r in sizes.smooth_radii]


def knobs(sizes: Sizes) -> dict[str, list[dict]]:
    """Ordinary training's regularisation knobs on split A: knob word -> the RMConfig fields of each grid
    value (the knob's default, plain ordinary, is not among them)."""
    grids = {
        "weight_decay": [float(v) for v in sizes.weight_decay_grid if float(v) != 0],
        "steps": [int(v) for v in sizes.steps_grid if int(v) != sizes.steps],
        "label_smoothing": [float(v) for v in sizes.label_smoothing_grid if float(v) != 0],
    }
    return {knob: [{knob: v} for v in values] for knob, values in grids.items()}


def knob_curves(sizes: Sizes) -> dict[str, dict[str, float]]:
    """knob word -> {setting: knob value} of ordinary training's settings along it, plain "ordinary" at the
    knob's default included (the `knobs` of drostudy.analysis.matched.matched_comparisons)."""
    defaults = {"weight_decay": 0.0, "steps": float(sizes.steps), "label_smoothing": 0.0}
    return {
        knob: {"ordinary": defaults[knob]}
        | {setting_label("ordinary", **fields): float(fields[knob]) for fields in settings}
        for knob, settings in knobs(sizes).items()
        if settings  # an empty grid: no curve along that knob (e.g. the default sweep)
    }


def experiments(sizes: Sizes) -> list[tuple[str, float, list[dict]]]:
    """(split, label noise, settings besides ordinary) of each stage."""
    main = [(PRIMARY_SPLIT, 0.0, headline(sizes) + radius_axis(sizes))]
    shifts = [(s, 0.0, headline(sizes)) for s in sizes.splits if s != PRIMARY_SPLIT]
    return main + shifts + [(PRIMARY_SPLIT, float(n), headline(sizes)) for n in sizes.noise]


def stage(split: str, noise: float) -> str:
    """`rm <split>` (+ ` noise <fraction>`): the paired experiment a run belongs to."""
    return f"{STAGE} {split}" + (f" noise {noise:g}" if noise else "")


def grid(sizes: Sizes) -> list[tuple[str, RMConfig]]:
    """(label `<stage> | <setting>`, config) of every run: each stage's settings and ordinary on the
    `seeds` seeds, then ordinary and the headline settings of split A on the seeds up to `headline_seeds`
    (their spread needs them; split A's other settings are compared on the seeds they share), then
    ordinary training along each of its knobs on split A on the seeds up to `headline_seeds` (each knob
    setting needs every seed ordinary has, drostudy.analysis.matched)."""
    base = base_config(sizes)
    extra = [(PRIMARY_SPLIT, 0.0, headline(sizes))]
    along = [(PRIMARY_SPLIT, 0.0, [f for settings in knobs(sizes).values() for f in settings])]
    seeds = range(max(sizes.seeds, sizes.headline_seeds))
    return (
        _runs(base, experiments(sizes), range(sizes.seeds))
        + _runs(base, extra, range(sizes.seeds, sizes.headline_seeds))
        + _runs(base, along, seeds, ordinary=False)
    )


def _runs(base: RMConfig, plan, seeds, ordinary: bool = True) -> list[tuple[str, RMConfig]]:
    """(label, config) for every (split, label noise, settings) of `plan` and seed; ordinary first
    (`ordinary`: whether plain ordinary runs too)."""
    out = []
    for split, noise, settings in plan:
        for setting in [{}, *settings] if ordinary else settings:
            for seed in seeds:
                fields = split_domains(split) | {"label_noise": noise, "seed": seed} | setting
                config = dataclasses.replace(base, **fields)
                out.append((f"{stage(split, noise)} | {name(config, base)}", config))
    return out


def name(config: RMConfig, base: RMConfig) -> str:
    """A run's setting: `config.setting`, with `steps <n>` for ordinary training run for other than the
    base number of steps (`ordinary steps 94`)."""
    if config.steps == base.steps:
        return config.setting
    if config.setting != "ordinary":
        raise ValueError(f"only ordinary training moves along steps; got {config.setting!r}")
    return setting_label("ordinary", steps=config.steps)


def primary(sizes: Sizes) -> tuple[str, str]:
    """(stage, setting) of the primary comparison, named before the run: the TV ball at the headline
    radius against ordinary training on split A (OOD mean, unadjusted verdict)."""
    ball = dataclasses.replace(base_config(sizes), **tv(sizes.headline_radius))
    return stage(PRIMARY_SPLIT, 0.0), ball.setting


def headline_settings(sizes: Sizes) -> list[str]:
    """The names of the headline settings (drostudy.config.setting_label)."""
    base = base_config(sizes)
    return [dataclasses.replace(base, **s).setting for s in headline(sizes)]


class Finished(NamedTuple):
    """What `run` returns."""

    runs: list[dict]
    """the metrics of every run (drostudy.runs), each with its `label` `<stage> | <setting>`"""
    test_domains: list[str]
    """each test pair's domain, in the order of every run's `test_margins`"""
    cache_cpu_s: float
    """CPU seconds of computing the frozen features"""
    run_cpu_s: float
    """CPU seconds of the runs in this session (a resumed run costs ~0)"""


def run(sizes: Sizes, folder: str | Path | None) -> Finished:
    """Run the grid of `sizes`, each run resumed from its own folder under `folder` (None: nothing
    written), all on one CachedRuns: the frozen features of each split's training pairs, then of the test
    pairs, are computed once first."""
    base = base_config(sizes)
    shared = CachedRuns(base)
    cpu = time.process_time()
    for split in sizes.splits:
        for seed in range(max(sizes.seeds, sizes.headline_seeds)):
            config = dataclasses.replace(base, seed=seed, **split_domains(split))
            shared.features.pairs(shared.train_pairs(config))
    shared.features.pairs(shared.test)
    cache_cpu_s, cpu = time.process_time() - cpu, time.process_time()
    # one thread: a run's tensors are tiny, and a second thread made it 4x the CPU time (4.1 s, 1 s alone),
    # with bitwise the same margins under the study's numerics (drostudy.threads.REPRODUCIBLE_NUMERICS)
    with torch_threads(1):
        runs = run_all(grid(sizes), folder, shared.train, desc="reward models")
    return Finished(runs, list(shared.test["domain"]), cache_cpu_s, time.process_time() - cpu)
