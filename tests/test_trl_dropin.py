"""The TRL drop-in (issue 17): swap two class names and set divergence/radius; radius 0 is TRL; the worst
case over the optimizer batch (accumulation 4 x 2 = one batch of 8); every former silent no-op an error or
a working option; the examples run. Tiny random models, in-memory datasets."""

from __future__ import annotations

import json
import pickle
import runpy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from toy_pairs import text_pairs
from trl import DPOConfig, DPOTrainer, RewardTrainer

from drostudy import (
    RobustDPOConfig,
    RobustDPOTrainer,
    RobustRewardConfig,
    RobustRewardTrainer,
)
from drostudy.models import tiny_policy, tiny_reward_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True, seed=0)


def pairs(n: int = 8) -> Dataset:
    return Dataset.from_list(text_pairs(n))


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    """A tiny policy saved to disk: TRL's documented usage passes a path and builds the reference from it."""
    path = tmp_path_factory.mktemp("policy")
    model, tok = tiny_policy()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def dpo(cls, config_cls, policy, out, ref_model=None, data=None, **kw):
    args = config_cls(
        output_dir=str(out),
        learning_rate=5e-3,
        beta=0.5,
        max_length=64,
        logging_steps=1,
        **(CPU | {"max_steps": 2, "per_device_train_batch_size": 4} | kw),
    )
    tok = tiny_policy()[1]
    extra = {} if ref_model is None else {"ref_model": ref_model}
    return cls(model=policy, args=args, train_dataset=data or pairs(), processing_class=tok, **extra)


def logged(trainer) -> list[dict]:
    return [row for row in trainer.state.log_history if "loss" in row]


def params(trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_dpo_swap_trains_the_robust_objective_and_radius_zero_is_trl(policy_path, tmp_path):
    plain = dpo(DPOTrainer, DPOConfig, policy_path, tmp_path / "plain")
    plain.train()
    zero = dpo(RobustDPOTrainer, RobustDPOConfig, policy_path, tmp_path / "zero", radius=0.0)
    zero.train()
    assert [r["loss"] for r in logged(zero)] == [r["loss"] for r in logged(plain)]
    assert torch.equal(params(zero), params(plain))
    robust = dpo(
        RobustDPOTrainer, RobustDPOConfig, policy_path, tmp_path / "kl", divergence="kl", radius=0.5
    )
    robust.train()  # no ref_model, no precompute: TRL's own reference copy
    last = logged(robust)[-1]
    assert last["dro/robust_loss"] > last["dro/mean_loss"] and last["loss"] == last["dro/robust_loss"]
    assert not torch.equal(params(robust), params(plain))
    metrics = robust.evaluate(eval_dataset=pairs(4))  # a new dataset after training
    assert metrics["eval_dro/robust_loss"] >= metrics["eval_dro/mean_loss"]
    robust.save_model(str(tmp_path / "saved"))
    settings = json.loads((tmp_path / "saved" / "drostudy_robust.json").read_text())
    assert (settings["divergence"], settings["radius"], settings["config"]) == (
        "kl",
        0.5,
        "RobustDPOConfig",
    )
    saved_args = torch.load(tmp_path / "saved" / "training_args.bin", weights_only=False)
    assert (saved_args.divergence, saved_args.radius) == ("kl", 0.5)


@pytest.mark.parametrize(
    "robust",
    [
        dict(divergence="kl", radius=0.5),
        dict(divergence="chi2", radius=1.0, level="group", group_column="domain"),
        dict(dro_method="kldpo", reg=0.5),
        dict(dro_method="group_eg", group_step=1.0, group_column="domain"),
    ],
)
def test_dpo_accumulation_4x2_equals_one_batch_of_8(policy_path, tmp_path, robust):
    ref = tiny_policy(seed=1)[0]  # a reference unlike the policy, so the pair losses differ at step 0
    runs = {}
    for name, batch, accumulation, extra in [
        ("one", 8, 1, {}),
        ("acc", 2, 4, {}),
        ("micro", 2, 4, {"dro_batch": "micro"}),
    ]:
        trainer = dpo(
            RobustDPOTrainer,
            RobustDPOConfig,
            policy_path,
            tmp_path / name,
            ref_model=ref,
            max_steps=1,
            per_device_train_batch_size=batch,
            optim="sgd",
            gradient_accumulation_steps=accumulation,
            **robust,
            **extra,
        )
        trainer.train()
        runs[name] = (logged(trainer)[0], params(trainer))
    (one, p_one), (acc, p_acc), (_, p_micro) = runs["one"], runs["acc"], runs["micro"]
    assert acc["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert acc["dro/robust_loss"] == pytest.approx(one["dro/robust_loss"], rel=1e-5)
    torch.testing.assert_close(p_acc, p_one, rtol=0, atol=1e-6)
    # the per-micro-batch worst case is a different (weaker) objective: it must not coincide
    assert (p_micro - p_one).abs().max() > 10 * (p_acc - p_one).abs().max()


def test_reward_swap_and_accumulation(tmp_path):
    data = pairs(8)

    def run(cls, config_cls, name, **kw):
        model, tok = tiny_reward_model()
        args = config_cls(
            output_dir=str(tmp_path / name),
            max_steps=1,
            learning_rate=1e-2,
            optim="sgd",
            logging_steps=1,
            **(CPU | kw),
        )
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tok)
        trainer.train()
        return logged(trainer)[0], params(trainer)

    plain, p_plain = run(RewardTrainer, RobustRewardConfig, "plain", per_device_train_batch_size=8)
    zero, p_zero = run(RobustRewardTrainer, RobustRewardConfig, "zero", per_device_train_batch_size=8)
    assert zero["loss"] == plain["loss"] and torch.equal(p_zero, p_plain)
    robust = dict(divergence="tv", radius=0.4, level="group", group_column="domain")
    one, p_one = run(
        RobustRewardTrainer, RobustRewardConfig, "one", per_device_train_batch_size=8, **robust
    )
    acc, p_acc = run(
        RobustRewardTrainer,
        RobustRewardConfig,
        "acc",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        **robust,
    )
    assert one["loss"] > plain["loss"]
    assert acc["loss"] == pytest.approx(one["loss"], rel=1e-5)
    torch.testing.assert_close(p_acc, p_one, rtol=0, atol=1e-6)
    assert acc["dro/weight_mass/code"] + acc["dro/weight_mass/math"] == pytest.approx(1.0)


def test_trl_options_compose_with_the_robust_path(policy_path, tmp_path):
    """At radius 0 the drostudy path (divergence set) reproduces TRL's loss, loss_weights and WPO included."""
    ref = tiny_policy(seed=1)[0]
    options = dict(
        loss_type=["sigmoid", "ipo", "hinge"], loss_weights=[3.0, 0.5, 1.0], use_weighting=True
    )
    plain = dpo(DPOTrainer, DPOConfig, policy_path, tmp_path / "p", ref_model=ref, **options)
    ours = dpo(
        RobustDPOTrainer,
        RobustDPOConfig,
        policy_path,
        tmp_path / "o",
        ref_model=ref,
        divergence="tv",
        radius=0.0,
        **options,
    )
    batch = next(iter(plain.get_train_dataloader()))
    with torch.no_grad():
        expected = plain.compute_loss(plain.model, dict(batch))
        got = ours.compute_loss(ours.model, dict(batch))
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    assert (
        abs(float(expected) - 0.6931) > 1e-2
    )  # the options changed TRL's loss: the check is not vacuous


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p, o: dict(args={"divergence": "kl", "radius": 0.5}), "needs args=RobustDPOConfig"),
        (lambda p, o: dict(args=None), "needs args=RobustDPOConfig"),
        (lambda p, o: dict(args=DPOConfig(output_dir=o, **CPU)), "got a DPOConfig"),
        (
            lambda p, o: dict(
                args=RobustDPOConfig(output_dir=o, dro_method="group_eg", group_step=1.0, **CPU)
            ),
            "needs a 'group' column",
        ),
        (
            lambda p, o: dict(
                args=RobustDPOConfig(output_dir=o, divergence="kl", radius=0.1, loss_type=["aot"], **CPU)
            ),
            "loss_type 'aot' sorts the batch",
        ),
        (
            lambda p, o: dict(
                args=RobustDPOConfig(output_dir=o, divergence="kl", radius=0.1, ld_alpha=0.5, **CPU)
            ),
            "ld_alpha",
        ),
    ],
)
def test_former_silent_no_ops_raise_at_construction(policy_path, tmp_path, make, match):
    with pytest.raises(ValueError, match=match):
        RobustDPOTrainer(
            model=policy_path,
            train_dataset=pairs(),
            processing_class=tiny_policy()[1],
            **make(policy_path, str(tmp_path)),
        )


def test_micro_batch_worst_case_warns_below_eight(policy_path, tmp_path):
    with pytest.warns(UserWarning, match="dro_batch='micro'"):
        dpo(
            RobustDPOTrainer,
            RobustDPOConfig,
            policy_path,
            tmp_path,
            divergence="kl",
            radius=0.5,
            dro_batch="micro",
            per_device_train_batch_size=2,
        )


def test_configs_show_in_hf_argument_parser():
    from transformers import HfArgumentParser

    parser = HfArgumentParser(RobustDPOConfig)
    (args,) = parser.parse_args_into_dataclasses(
        ["--output_dir", "x", "--divergence", "cvar", "--radius", "0.25", "--use_cpu", "--bf16", "False"]
    )
    assert (args.divergence, args.radius) == ("cvar", 0.25)
    assert "ambiguity set" in parser.format_help()
    assert pickle.loads(pickle.dumps(args)).radius == 0.25


@pytest.mark.parametrize("script", ["trl_dpo.py", "trl_reward.py", "trl_rloo.py"])
def test_readme_examples_run(script, capsys):
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert "dro/" in capsys.readouterr().out


def test_cli_trains_on_a_local_jsonl_with_trl_flags_and_saves_the_adapter(tmp_path, capsys):
    from drostudy.__main__ import main

    data = tmp_path / "my_pairs.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in pairs(8).to_list()))
    out = tmp_path / "run"
    argv = [
        "dpo",
        "--model",
        "tiny-llama",
        "--dataset",
        str(data),
        "--save-model",
        "true",
        "--loss",
        "group_eg",
        "--train-domains",
        "math,code",
        "--eval-domains",
        "reasoning",
        "--trl-args",
        "per_device_train_batch_size=2,gradient_accumulation_steps=2",
        "--steps",
        "2",
        "--lora-layers",
        "1",
        "--lora-rank",
        "2",
        "--n-eval",
        "2",
        "--n-generate",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_train"] == 8 and len(metrics["history"]) == 2
    assert {"dro/q_0", "dro/q_1"} <= set(metrics["history"][-1])  # the groups came from `domain`
    saved = out / "model"
    assert (saved / "adapter_config.json").is_file() and (saved / "tokenizer_config.json").is_file()
    settings = json.loads((saved / "drostudy_robust.json").read_text())
    assert settings["dro_method"] == "group_eg" and settings["group_names"] == ["code", "math"]
    args = torch.load(saved / "training_args.bin", weights_only=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)


def test_rm_cli_trains_on_own_pairs_and_saves_the_model(tmp_path):
    from drostudy.__main__ import main

    data = tmp_path / "pairs.parquet"
    pairs(8).to_parquet(str(data))
    out = tmp_path / "rm"
    argv = [
        "rm",
        "--model",
        "tiny-bert",
        "--dataset",
        str(data),
        "--save-model",
        "true",
        "--divergence",
        "tv",
        "--radius",
        "0.5",
        "--level",
        "group",
        "--batch-size",
        "2",
        "--trl-args",
        "gradient_accumulation_steps=4",
        "--n-eval",
        "2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history and {"dro/weight_mass/code", "dro/weight_mass/math"} <= set(history[0])
    assert (out / "model" / "config.json").is_file()
    assert json.loads((out / "model" / "drostudy_robust.json").read_text())["level"] == "group"


def test_bad_trl_args_are_rejected_before_training():
    from drostudy.dpo import run as dpo
    from drostudy.reward import run as reward
    from drostudy.rl import run as rl

    for config, kwargs in [
        (dpo.DPORunConfig, {}),
        (reward.RMConfig, {}),
        (rl.RLConfig, {"reward_model": "x"}),
    ]:
        with pytest.raises(ValueError, match="does not have"):
            config(trl_args=("gradient_accumulation=4",), **kwargs)
