"""The prompt-robust RLOO trainer: the weighting by hand, weights reaching the advantages, radius 0 is TRL's
RLOOTrainer, the reward wrapper, the config checks and the command line. Tiny random models, short prompts."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from datasets import Dataset
from trl import RLOOTrainer

from drostudy.config import dataclass_from_args
from drostudy.models import load_policy, load_reward_model
from drostudy.rl import run as rl
from drostudy.rl.reward import LearnedReward
from drostudy.rl.trainer import (
    RobustRLOOTrainer,
    advantage_scale,
    completion_scale,
    prompt_values,
)
from drostudy.runs import lora_config

G = 2  # completions per prompt


def test_prompt_values_by_hand():
    rewards = torch.tensor([1.0, 3.0, -2.0, float("nan"), 0.0, 0.0])  # 3 prompts x 2 completions
    kl = torch.tensor([2.0, 0.0, 1.0, 5.0, 0.0, 0.0])
    assert prompt_values(rewards, 2).tolist() == [2.0, -2.0, 0.0]  # the NaN completion is left out
    assert prompt_values(rewards, 2, kl, beta=0.5).tolist() == [1.5, -2.5, 0.0]
    with pytest.raises(ValueError, match="num_generations"):
        prompt_values(rewards, 4)


def test_advantage_scale_by_hand():
    values = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    # tv ball of radius 0.1: mass 0.1 moves from the highest value (prompt 3) to the lowest (prompt 0)
    scale, weights = advantage_scale(values, "tv", 0.1)
    torch.testing.assert_close(weights, torch.tensor([0.35, 0.25, 0.25, 0.15], dtype=torch.float64))
    torch.testing.assert_close(scale, torch.tensor([1.4, 1.0, 1.0, 0.6], dtype=torch.float64))
    scale0, _ = advantage_scale(values, "kl", 0.0)
    assert torch.allclose(scale0, torch.ones(4, dtype=torch.float64), rtol=0, atol=2e-16)
    # the local slice follows TRL's layout: G consecutive completions per prompt, processes end to end
    local = completion_scale(
        torch.tensor([2.0, 0.5, 1.0, 0.5]), 2, slice(4, 8)
    )  # rank 1 of 2, 4 rows each
    assert local.tolist() == [1.0, 1.0, 0.5, 0.5]


def base_reward(prompts, completions, **kwargs):
    """Prompt "hard ..." scores about -5, others about +1; a small completion-dependent part keeps the
    leave-one-out advantages non-zero."""
    texts = [c[-1]["content"] for c in completions]
    base = [-5.0 if p[-1]["content"].startswith("hard") else 1.0 for p in prompts]
    return [b + 0.1 * (sum(map(ord, t)) % 7) for b, t in zip(base, texts, strict=True)]


PROMPTS = ["hard question one", "easy question two", "easy question three", "easy question four"]


def toy_prompts() -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS])


def make_trainer(cls, tmp_path, steps=2, radius=0.0, **kwargs):
    config = rl.RLConfig(
        reward_model="tiny-bert",
        model="tiny-llama",
        lora_layers=1,
        lora_rank=2,
        batch_size=4,
        num_generations=G,
        max_completion_length=4,
        steps=steps,
    )
    policy, tok = load_policy("tiny-llama")  # the same random weights every call
    return cls(
        model=policy,
        reward_funcs=base_reward,
        args=rl.trl_config(config, str(tmp_path), disable_tqdm=True, learning_rate=5e-2, radius=radius),
        train_dataset=toy_prompts(),
        processing_class=tok,
        peft_config=lora_config(config, policy.config.num_hidden_layers),
        **kwargs,
    )


def generation_batch():
    """What TRL's sampler hands over: each prompt repeated G times, consecutively."""
    return [{"prompt": [{"role": "user", "content": p}]} for p in PROMPTS for _ in range(G)]


def test_weights_reach_the_advantages(tmp_path):
    outs = {}
    for name, cls, kwargs in [
        ("plain", RLOOTrainer, {}),
        ("robust", RobustRLOOTrainer, {"radius": 0.2}),
    ]:
        trainer = make_trainer(cls, tmp_path, **kwargs)
        trainer.model.train()
        torch.manual_seed(0)  # the same sampled completions for both
        outs[name] = trainer._generate_and_score_completions(generation_batch())
    plain, robust = outs["plain"], outs["robust"]
    assert torch.equal(plain["completion_ids"], robust["completion_ids"])
    scale = trainer.last_advantage_scale  # (B,) per completion
    # the low-reward prompt (first G rows) gets all the moved mass: tv radius 0.2 over 4 prompts
    assert torch.allclose(scale[:G], torch.full((G,), 4 * (0.25 + 0.2)))
    # tv takes that mass from the highest-value prompt only; the factors average to 1
    assert (scale[G:] <= 1).all() and scale[G:].min() < 1 and scale.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(robust["advantages"], plain["advantages"] * scale)
    assert plain["advantages"][:G].abs().sum() > 0  # so the comparison above says something
    logged = trainer._metrics["train"]
    assert logged["dro/max_weight"][-1] == pytest.approx(0.45)
    assert logged["dro/robust_value"][-1] < logged["dro/mean_value"][-1]


def test_radius_zero_is_the_plain_trainer(tmp_path):
    params = {}
    for name, cls in [("plain", RLOOTrainer), ("robust", RobustRLOOTrainer)]:
        trainer = make_trainer(cls, tmp_path / name, steps=2)
        trainer.train()
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        trained = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        params[name] = (losses, trained)
    (plain_losses, plain_params), (robust_losses, robust_params) = params["plain"], params["robust"]
    assert plain_losses == robust_losses and len(plain_losses) == 2
    assert plain_params.keys() == robust_params.keys()
    # LoRA's B matrices start at zero: non-zero ones show training moved the weights (equality is not vacuous)
    assert any(v.abs().sum() > 0 for k, v in plain_params.items() if "lora_B" in k)
    for key, value in plain_params.items():
        assert torch.equal(value, robust_params[key]), key


def test_learned_reward_scores_prompt_and_response_pairs():
    model, tok = load_reward_model("tiny-bert")
    reward = LearnedReward(model, tok, truncate_length=32)
    logged = {}
    prompts = [[{"role": "user", "content": "What is 2 + 2?"}]] * 2
    completions = [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "five"}]]
    out = reward(prompts, completions, answer=["4", "4"], log_metric=logged.__setitem__)
    assert out == pytest.approx(reward.score(["What is 2 + 2?"] * 2, ["4", "five"]))
    assert out[0] != out[1] and logged == {"samples/correct": 0.5}


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("divergence", "wasserstein", "divergence"),
        ("radius", 1.5, "radius"),
        ("num_generations", 1, "num_generations"),
        ("train_domains", ("math", "poetry"), "train_domains"),
        ("reward_model", "", "reward_model"),
        ("steps", 0, "steps"),
        ("beta", -0.1, "beta"),
    ],
)
def test_bad_config_raises(field, value, match):
    kwargs = {"reward_model": "tiny-bert"} | {field: value}
    with pytest.raises(ValueError, match=match):
        rl.RLConfig(**kwargs)


@pytest.mark.parametrize(
    "old, new, value",
    [
        ("--prompts-per-step", "batch_size", 3),
        ("--max-prompt-tokens", "max_length", 80),
        ("--reward-max-length", "reward_truncate_length", 64),
    ],
)
def test_renamed_flags_still_parse_with_a_warning(old, new, value):
    parser = argparse.ArgumentParser()
    rl.add_cli_arguments(parser)
    flag = "--" + new.replace("_", "-")
    with pytest.warns(FutureWarning, match=f"{old} is deprecated; use {flag}"):
        args = parser.parse_args(["--reward-model", "tiny-bert", old, str(value), "--out", "x"])
    assert getattr(dataclass_from_args(rl.RLConfig, args), new) == value


def test_n_eval_zero_means_every_held_out_prompt():
    from drostudy.data import load_suite
    from drostudy.rl.eval import prompt_rows

    assert rl.RLConfig(reward_model="tiny-bert", n_eval=0).n_eval == 0
    with pytest.raises(ValueError, match="n_eval"):
        rl.RLConfig(reward_model="tiny-bert", n_eval=-1)
    test = load_suite()["test"]
    _, tok = load_policy("tiny-llama")
    every = prompt_rows(test, "safety", 0, tok, 10_000, "", seed=0)
    distinct = {row["prompt"] for row in test if row["domain"] == "safety"}
    assert len(every) == len(distinct) > 3
    assert len(prompt_rows(test, "safety", 3, tok, 10_000, "", seed=0)) == 3


def test_cli_writes_metrics_and_resumes(tmp_path, monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    rl.add_cli_arguments(parser)
    argv = [
        *(
            "--model tiny-llama --reward-model tiny-bert --divergence tv --radius 0.3 "
            "--train-domains math --eval-domains safety --steps 1 --n-train 2 --batch-size 2 "
            "--num-generations 2 --max-completion-length 3 --n-eval 2 --max-new-tokens 3 "
            "--lora-layers 1 --max-length 120 --out"
        ).split(),
        str(tmp_path / "run"),
    ]
    args = parser.parse_args(argv)
    assert rl.cli_main(args) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["stage"] == "rl" and metrics["method"] == "robust"
    assert set(metrics["per_domain"]) == {"math", "safety"}
    for stats in metrics["per_domain"].values():
        assert {"learned_reward", "correct", "kl", "correct_before", "learned_reward_before"} <= set(
            stats
        )
        assert 0 <= stats["correct"] <= 1 and stats["n"] == 2
    assert metrics["history"] and "dro/max_weight" in metrics["history"][0]
    assert (
        metrics["in_distribution"]["learned_reward"] == metrics["per_domain"]["math"]["learned_reward"]
    )

    def fail(config):
        raise AssertionError("a finished run must not train again")

    monkeypatch.setattr(rl, "train_rl", fail)
    assert rl.cli_main(parser.parse_args(argv)) == 0
    assert "skipping" in capsys.readouterr().out


def _saved_reward_folder(tmp_path, config: dict):
    folder = tmp_path / "reward"
    folder.mkdir(parents=True)
    (folder / "drostudy-done.json").write_text("{}")  # drostudy.packaged.build_once's completion marker
    (folder / "rm_metrics.json").write_text(json.dumps({"config": config}))
    return folder


def test_saved_reward_model_is_reused_only_for_its_config(tmp_path):
    import dataclasses

    from drostudy.reward.run import RMConfig
    from drostudy.rl.reward import train_reward_for_rl

    fields = dict(engine="cached", frozen_layers=4, model="tiny-bert")
    wanted = json.loads(json.dumps(dataclasses.asdict(RMConfig(**fields))))
    # saved before weight_decay and label_smoothing existed: trained at their defaults, reused
    older = {k: v for k, v in wanted.items() if k not in ("weight_decay", "label_smoothing")}
    folder = _saved_reward_folder(tmp_path, older)
    assert train_reward_for_rl(folder, model="tiny-bert") == folder
    with pytest.raises(ValueError, match="another config"):  # but not for another value of them
        train_reward_for_rl(folder, model="tiny-bert", weight_decay=0.1)
    other = _saved_reward_folder(tmp_path / "x", wanted | {"steps": wanted["steps"] + 1})
    with pytest.raises(ValueError, match="another config"):
        train_reward_for_rl(other, model="tiny-bert")
