"""The prompt-robust GRPO trainer: the group helpers by hand, radius 0 is TRL's GRPOTrainer, the weights
reach the advantages and cover the whole generation batch, every TRL loss_type gives each prompt its share,
group and difficulty levels, the config checks, the example and the command line, and (gpu-marked, run by
scripts/gpu_check.sh) radius 0 equal to TRL on the GPU. Tiny random models, short prompts and completions."""

from __future__ import annotations

import json
import math
import os
import runpy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import HfArgumentParser
from trl import GRPOConfig, GRPOTrainer

from drostudy import RobustGRPOConfig, RobustGRPOTrainer
from drostudy.dropin.grpo_config import GRPO_LOSS_TYPES
from drostudy.models import load_policy
from drostudy.rl.grpo import difficulty_bins, eg_prompt_weights, group_values, pass_rates

G = 2  # completions per prompt
PROMPTS = ["hard question one", "easy question two", "easy question three", "easy question four"]
CPU = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def base_reward(prompts, completions, **kwargs):
    """Prompt "hard ..." scores about -5, the others about +1; a small completion-dependent part keeps the
    group-normalised advantages non-zero."""
    texts = [c[-1]["content"] for c in completions]
    base = [-5.0 if p[-1]["content"].startswith("hard") else 1.0 for p in prompts]
    return [b + 0.1 * (sum(map(ord, t)) % 7) for b, t in zip(base, texts, strict=True)]


def toy_prompts(groups: bool = False) -> Dataset:
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS]
    if groups:
        rows = [row | {"group": p.split()[0]} for row, p in zip(rows, PROMPTS, strict=True)]
    return Dataset.from_list(rows)


def make_trainer(cls, out, data=None, **kwargs):
    config_cls = RobustGRPOConfig if cls is RobustGRPOTrainer else GRPOConfig
    fields = dict(
        output_dir=str(out),
        per_device_train_batch_size=4 * G,
        num_generations=G,
        max_completion_length=4,
        max_steps=2,
        learning_rate=5e-2,
        logging_steps=1,
        seed=0,
        gradient_checkpointing=False,
        **CPU,
    )
    policy, tok = load_policy("tiny-llama")  # the same random weights every call
    return cls(
        model=policy,
        reward_funcs=base_reward,
        args=config_cls(**(fields | kwargs)),
        train_dataset=data if data is not None else toy_prompts(),
        processing_class=tok,
    )


def generation_batch(groups: bool = False):
    """What TRL's sampler hands over: each prompt repeated G times, consecutively."""
    return [row for row in toy_prompts(groups).to_list() for _ in range(G)]


def score(trainer, groups: bool = False) -> dict:
    trainer.model.train()
    torch.manual_seed(0)  # the same sampled completions for every trainer
    return trainer._generate_and_score_completions(generation_batch(groups))


def test_group_helpers_by_hand():
    rewards = torch.tensor([1.0, -1.0, 2.0, 3.0, float("nan"), -2.0, float("nan"), float("nan")])
    rates = pass_rates(rewards, 2, threshold=0.0)
    assert rates.tolist() == [0.5, 1.0, 0.0, 0.0]  # NaN left out; an unscored prompt passes 0
    assert difficulty_bins(torch.tensor([0.0, 0.49, 0.5, 1.0]), 2).tolist() == [0, 0, 1, 1]
    values, groups = torch.tensor([1.0, 3.0, -2.0]), torch.tensor([0, 0, 2])
    assert group_values(values, groups, 3)[[0, 2]].tolist() == [2.0, -2.0]
    assert group_values(values, groups, 3)[1].isnan()
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)  # group 1 is absent: its mass is not used
    torch.testing.assert_close(eg_prompt_weights(q, groups), torch.tensor([0.2, 0.2, 0.6]).double())


def test_radius_zero_is_trl_and_a_robust_run_differs(tmp_path):
    runs = {}
    for name, cls, kw in [
        ("plain", GRPOTrainer, {}),
        ("zero", RobustGRPOTrainer, dict(divergence="tv")),
        ("robust", RobustGRPOTrainer, dict(divergence="tv", radius=0.3)),
    ]:
        trainer = make_trainer(cls, tmp_path / name, max_steps=3, **kw)
        trainer.train()
        rows = [row for row in trainer.state.log_history if "loss" in row]
        params = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        runs[name] = ([row["loss"] for row in rows], params, rows)
    (plain, p_plain, _), (zero, p_zero, _), (robust, p_robust, rows) = runs.values()
    assert len(plain) == 3 and plain == zero and torch.equal(p_plain, p_zero)
    assert not torch.equal(p_plain, p_robust)  # the weighting changed the updates
    assert rows[0]["dro/max_weight"] > 0.25 and rows[0]["dro/robust_value"] < rows[0]["dro/mean_value"]
    assert {"dro/effective_sample_size", "dro/entropy"} <= set(rows[0])


def test_weights_reach_the_advantages_after_group_normalisation(tmp_path):
    plain = score(make_trainer(GRPOTrainer, tmp_path / "p"))
    trainer = make_trainer(RobustGRPOTrainer, tmp_path / "r", divergence="tv", radius=0.2)
    robust = score(trainer)
    assert torch.equal(plain["completion_ids"], robust["completion_ids"])
    scale = trainer.last_advantage_scale  # (B,) per completion, G consecutive per prompt
    # tv radius 0.2 over 4 prompts: the low-reward prompt gets 0.25 + 0.2, the factor 4 * 0.45
    assert torch.allclose(scale[:G], torch.full((G,), 1.8)) and scale.mean().item() == pytest.approx(1)
    torch.testing.assert_close(robust["advantages"], plain["advantages"] * scale)
    assert plain["advantages"][:G].abs().sum() > 0  # so the comparison above says something


def test_weights_cover_the_whole_generation_batch(tmp_path, monkeypatch):
    """1 prompt per micro-batch, 4 micro-batches per generation, 2 per optimizer step: the worst case is
    over the 4 prompts of the generation, computed once for both optimizer steps."""
    trainer = make_trainer(
        RobustGRPOTrainer,
        tmp_path,
        divergence="tv",
        radius=0.2,
        per_device_train_batch_size=G,
        steps_per_generation=4,
        gradient_accumulation_steps=2,
    )
    seen = []
    original = trainer._prompt_weights
    monkeypatch.setattr(
        trainer, "_prompt_weights", lambda *a, **k: seen.append(original(*a, **k)) or seen[-1]
    )
    trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 1
    weights = seen[0]
    assert weights.numel() == 4 and weights.max().item() == pytest.approx(0.45)
    assert weights.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("loss_type", GRPO_LOSS_TYPES)
def test_each_loss_type_gives_each_prompt_its_share(tmp_path, loss_type):
    """What RobustGRPOTrainer relies on (drostudy.rl.grpo, "Which loss_type"): TRL's loss with prompt p's
    advantages scaled by s_p >= 0 is sum_p s_p (the loss with only prompt p's advantages), off-policy (old
    log-probs shifted, so that clipping, SAPO's gates and VESPO's weights act), beta 0."""
    level = "sequence" if loss_type == "luspo" else "token"  # what TRL requires of each type
    trainer = make_trainer(GRPOTrainer, tmp_path, loss_type=loss_type, importance_sampling_level=level)
    inputs = score(trainer)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this bypasses
    logps = []
    original = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (
        logps.append(original(*a, **k)) or logps[-1]
    )

    def loss(advantages: torch.Tensor) -> float:
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, inputs | {"advantages": advantages}).item()

    loss(inputs["advantages"])  # records the current log-probs (B, T)
    noise = torch.randn(logps[0][0].shape, generator=torch.Generator().manual_seed(0))
    inputs["old_per_token_logps"] = logps[0][0].detach() + 0.3 * noise
    advantages, prompt = inputs["advantages"], torch.arange(len(PROMPTS)).repeat_interleave(G)
    scale = torch.tensor([3.0, 0.0, 0.5, 1.5])  # one factor per prompt, one of them zero
    parts = [loss(advantages * (prompt == p)) for p in range(len(PROMPTS))]
    assert loss(advantages * scale[prompt]) == pytest.approx(
        sum(s * part for s, part in zip(scale.tolist(), parts, strict=True)), rel=1e-5, abs=1e-7
    )
    assert sum(abs(part) for part in parts) > 1e-4  # so the equality says something


@pytest.mark.parametrize(
    "level, kwargs, key",
    [
        ("group", dict(group_step=1.0), "dro/weight_mass/hard"),
        ("group", dict(divergence="tv", radius=0.2), "dro/weight_mass/hard"),
        ("difficulty", dict(group_step=1.0, difficulty_bins=2), "dro/weight_mass/pass_0.00-0.50"),
        (
            "difficulty",
            dict(divergence="kl", radius=0.5, difficulty_bins=2),
            "dro/weight_mass/pass_0.00-0.50",
        ),
    ],
)
def test_groups_move_mass_to_the_low_value_group(tmp_path, level, kwargs, key):
    trainer = make_trainer(RobustGRPOTrainer, tmp_path, toy_prompts(groups=True), level=level, **kwargs)
    score(trainer, groups=True)
    mass = trainer._metrics["train"][key][-1]
    assert mass > 0.25 + 0.1  # the hard prompt is 1 of 4 (its group's and its bin's empirical share)
    if (
        "group_step" in kwargs
    ):  # EG: q moved from uniform towards the hard group, and stays with the trainer
        assert trainer.group_q.max().item() == pytest.approx(
            mass
        ) and trainer.group_q.sum() == pytest.approx(1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(radius=0.1), "needs a divergence"),
        (dict(divergence="wasserstein", radius=0.1), "unknown divergence"),
        (dict(divergence="tv", radius=0.1, dro_batch="optimizer"), r"dro_batch .*\['generation'\]"),
        (dict(level="domain", divergence="tv", radius=0.1), "unknown level"),
        (dict(level="group"), "level='group' needs a divergence"),
        (dict(group_step=1.0), "needs level 'group' or 'difficulty'"),
        (dict(level="group", group_step=1.0, divergence="tv", radius=0.1), "group_step replaces"),
        (dict(level="group", group_step=0.0), "group_step must be > 0"),
        (dict(level="difficulty", group_step=1.0), "needs difficulty_bins"),
        (dict(level="difficulty", group_step=1.0, difficulty_bins=1), "needs difficulty_bins"),
        (dict(divergence="tv", radius=0.1, difficulty_bins=4), "difficulty_bins belongs"),
        (dict(divergence="tv", radius=0.1, pass_threshold=0.5), "pass_threshold belongs"),
        (dict(divergence="tv", radius=0.1, loss_type="new_loss"), "loss_type 'new_loss'"),
    ],
)
def test_ignored_combinations_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        RobustGRPOConfig(output_dir=str(tmp_path), **CPU, **kwargs)


def test_trainer_refuses_a_plain_config_and_a_missing_group_column(tmp_path):
    with pytest.raises(ValueError, match="needs args=RobustGRPOConfig"):
        RobustGRPOTrainer(
            model="unused", reward_funcs=base_reward, args=GRPOConfig(output_dir=str(tmp_path), **CPU)
        )
    with pytest.raises(ValueError, match="needs a 'group' column"):
        make_trainer(RobustGRPOTrainer, tmp_path, level="group", group_step=1.0)


def test_config_shows_in_hf_argument_parser_and_settings():
    parser = HfArgumentParser(RobustGRPOConfig)
    argv = (
        "--output_dir x --level difficulty --difficulty_bins 4 --group_step 0.5 --use_cpu --bf16 False"
    ).split()
    (args,) = parser.parse_args_into_dataclasses(argv)
    assert (args.level, args.difficulty_bins, args.group_step) == ("difficulty", 4, 0.5)
    assert args.is_robust() and "pass rate" in parser.format_help()
    settings = args.robust_settings()
    assert settings["config"] == "RobustGRPOConfig" and settings["difficulty_bins"] == 4


def test_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "trl_grpo.py"), run_name="__main__")
    assert "dro/" in capsys.readouterr().out


def test_rl_command_takes_trainer_grpo(tmp_path):
    from drostudy.__main__ import main

    out = tmp_path / "run"
    argv = [
        *(
            "rl --trainer grpo --model tiny-llama --reward-model tiny-bert --divergence tv "
            "--radius 0.3 --train-domains math --eval-domains safety --steps 1 --n-train 2 "
            "--batch-size 2 --num-generations 2 --max-completion-length 3 --n-eval 2 "
            "--max-new-tokens 3 --lora-layers 1 --max-length 120 --trl-args loss_type=grpo "
            "--out"
        ).split(),
        str(out),
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["trainer"] == "grpo" and metrics["method"] == "robust"
    assert "dro/max_weight" in metrics["history"][0]


# radius 0 against TRL on the device (tests/test_gpu.py's tolerances): with deterministic kernels the same
# code runs in the same order, so fp32 agrees to a few ulps and bf16 to bf16 rounding; the robust run's
# parameters must differ from TRL's by more than MOVED x the parameter tolerance
LOSS_REL, PARAM_ATOL, MOVED = {False: 1e-5, True: 1e-2}, {False: 1e-5, True: 5e-4}, 4


@pytest.mark.gpu
@pytest.mark.parametrize("bf16", [pytest.param(False, id="fp32"), pytest.param(True, id="bf16")])
def test_grpo_trains_on_device_and_radius_zero_is_trl(tmp_path, bf16):
    """A few GRPO steps on the GPU: TRL's GRPOTrainer, the drop-in with DRO off, at radius 0 and robust (kl
    0.5). tests/conftest.py skips it without CUDA; DROSTUDY_GPU_TESTS_ON_CPU=1 rehearses it on the CPU."""
    on_cpu = os.environ.get("DROSTUDY_GPU_TESTS_ON_CPU") == "1"
    if not (on_cpu or torch.cuda.is_available()):
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    settings = {
        "plain": (GRPOTrainer, {}),
        "off": (RobustGRPOTrainer, {}),
        "zero": (RobustGRPOTrainer, dict(divergence="tv", radius=0.0)),
        "robust": (RobustGRPOTrainer, dict(divergence="kl", radius=0.5)),
    }
    runs = {}
    try:
        for name, (cls, robust) in settings.items():
            trainer = make_trainer(cls, tmp_path / name, use_cpu=on_cpu, bf16=bf16, **robust)
            trainer.train()
            rows = [row for row in trainer.state.log_history if "loss" in row]
            params = torch.cat([p.detach().float().flatten().cpu() for p in trainer.model.parameters()])
            on_device = {p.device.type for p in trainer.model.parameters()}
            runs[name] = ([row["loss"] for row in rows], params, rows, on_device)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert all(run[3] == {"cpu" if on_cpu else "cuda"} for run in runs.values())
    plain_losses, plain_params = runs["plain"][:2]
    assert len(plain_losses) == 2 and all(math.isfinite(v) for run in runs.values() for v in run[0])
    for name in ("off", "zero"):
        assert runs[name][0] == pytest.approx(plain_losses, rel=LOSS_REL[bf16], abs=1e-6), name
        torch.testing.assert_close(runs[name][1], plain_params, rtol=0, atol=PARAM_ATOL[bf16], msg=name)
    assert (runs["robust"][1] - plain_params).abs().max() > MOVED * PARAM_ATOL[bf16]
    assert runs["robust"][2][0]["dro/max_weight"] > 0.25  # the hard prompt got more than its share
