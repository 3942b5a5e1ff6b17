"""RobustDPOTrainer on a tiny random Llama: radius 0 is TRL's DPO, each peer's formula, weights, bad inputs."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import DPOTrainer

from drostudy.config import dataclass_from_args
from drostudy.dpo import run as dpo
from drostudy.dpo.trainer import GroupPreferenceCollator, RobustDPOTrainer
from drostudy.dropin.configs import RobustDPOConfig
from drostudy.models import load_policy

GROUP_KEY = "group"
# The robust fields at their defaults (DRO off), so a test can switch a trainer's objective in place.
OFF = dict(
    divergence=None, radius=0.0, level="example", dro_method="worst_case", reg=None, group_step=None
)

BETA = 0.5  # large enough that the per-pair losses differ visibly after one step


def _rows(n: int = 8) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"What is {i} plus {i}?" + " Think." * (i % 3)}],
                "chosen": [{"role": "assistant", "content": f"It is {2 * i}."}],
                "rejected": [{"role": "assistant", "content": "No idea, sorry." * (1 + i % 2)}],
                GROUP_KEY: i % 2,
            }
        )
    return rows


def _args(tmp_path, loss_type="sigmoid", steps=3, batch=4, **kw) -> RobustDPOConfig:
    return RobustDPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=5e-3,
        beta=BETA,
        loss_type=[loss_type],
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        precompute_ref_log_probs=True,
        seed=0,
        max_length=64,
        disable_tqdm=True,
        **kw,
    )


def _trainer(tmp_path, cls=RobustDPOTrainer, rows=None, **kw):
    model, tok = load_policy("tiny-llama")
    extra = {k: kw.pop(k) for k in ("loss_type", "steps", "batch", "label_smoothing", *OFF) if k in kw}
    return cls(
        model=model,
        args=_args(tmp_path, **extra),
        train_dataset=Dataset.from_list(rows or _rows()),
        processing_class=tok,
        **kw,
    )


def _losses(log_history) -> list[float]:
    return [h["loss"] for h in log_history if "loss" in h]


def test_radius_zero_trains_exactly_like_trl_dpo(tmp_path):
    trl = _trainer(tmp_path, cls=DPOTrainer)
    trl.train()
    robust = _trainer(tmp_path, divergence="tv", radius=0.0)
    robust.train()
    assert len(_losses(trl.state.log_history)) == 3
    assert _losses(robust.state.log_history) == pytest.approx(_losses(trl.state.log_history), rel=1e-6)
    first_trl, first_robust = trl.state.log_history[0], robust.state.log_history[0]
    for key in (
        "rewards/chosen",
        "rewards/margins",
        "logps/rejected",
        "entropy",
    ):  # TRL's metrics are kept
        assert first_robust[key] == pytest.approx(first_trl[key], rel=1e-6, abs=1e-9)
    assert first_robust["dro/effective_sample_size"] == pytest.approx(4.0)
    assert not any(k.startswith("dro/") for k in first_trl)


@pytest.fixture(scope="module")
def one_batch(tmp_path_factory):
    """A trainer (after one step, so the pair losses differ) and one full batch of 8 pairs."""
    trainer = _trainer(tmp_path_factory.mktemp("t"), batch=8, steps=1)
    trainer.train()
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch[GROUP_KEY].tolist()) == {0, 1}  # the collator passed the group ids through
    return trainer, batch


def _pair_losses(trainer, batch, beta=BETA) -> torch.Tensor:
    """Per-pair sigmoid DPO losses of `batch`, computed here from plain logits (independent of TRL)."""
    model = trainer.model
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    token_logps = F.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[
        ..., 0
    ]
    logps = (token_logps * batch["completion_mask"][:, 1:]).sum(1)
    chosen, rejected = logps.chunk(2)
    delta = (chosen - batch["ref_chosen_logps"]) - (rejected - batch["ref_rejected_logps"])
    return -F.logsigmoid(beta * delta)


def _trainer_loss(trainer, batch, settings: dict) -> float:
    for name, value in (OFF | settings).items():
        setattr(trainer.args, name, value)
    trainer.model.train()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, dict(batch)))


def test_each_loss_matches_its_formula(one_batch):
    trainer, batch = one_batch
    losses = _pair_losses(trainer, batch).double()
    assert losses.std() > 1e-3  # the formulas below would not tell the losses apart otherwise
    cases = {
        "ordinary": ({}, losses.mean()),
        "robust tv at the vertex": (
            dict(divergence="tv", radius=1.0),
            losses.max(),
        ),
        "robust cvar alpha 1/4": (
            dict(divergence="cvar", radius=0.25),
            losses.topk(2).values.mean(),
        ),
        "dr_dpo": (
            dict(dro_method="dr_dpo", reg=0.3),
            -0.3 * (torch.logsumexp(-losses / 0.3, 0) - math.log(8)),
        ),
        "kldpo": (
            dict(dro_method="kldpo", reg=0.05),
            (torch.exp((losses - losses.mean()) / 0.05).clamp(max=10.0) * losses).mean(),
        ),
    }
    for name, (settings, expected) in cases.items():
        assert _trainer_loss(trainer, batch, settings) == pytest.approx(float(expected), rel=1e-5), name
    # robust weights tilt towards the high losses: strictly between the mean and the max
    tilted = _trainer_loss(trainer, batch, dict(divergence="kl", radius=0.1))
    assert losses.mean() < tilted < losses.max()


def test_group_robust_dpo_updates_q_by_exponentiated_gradient(one_batch):
    trainer, batch = one_batch
    losses = _pair_losses(trainer, batch).double()
    groups = batch[GROUP_KEY]
    group_means = torch.stack([losses[groups == g].mean() for g in (0, 1)])
    trainer.group_q = torch.tensor([0.5, 0.5], dtype=torch.float64)
    settings = dict(dro_method="group_eg", group_step=2.0)
    value = _trainer_loss(trainer, batch, settings)
    q = torch.softmax(2.0 * group_means, 0)  # q_g ∝ 0.5 exp(eta l_g)
    assert trainer.group_q.tolist() == pytest.approx(q.tolist(), rel=1e-6)
    assert value == pytest.approx(float((q * group_means).sum()), rel=1e-5)
    q_after = trainer.group_q.clone()
    trainer.model.eval()  # evaluation batches never move q
    with torch.no_grad():
        trainer.compute_loss(trainer.model, dict(batch))
    assert torch.equal(trainer.group_q, q_after)


def test_rdpo_is_trls_robust_loss(tmp_path):
    eps = 0.2
    trainer = _trainer(tmp_path, batch=8, steps=1, loss_type="robust", label_smoothing=eps)
    trainer.train()  # one step, so that delta != 0 (at delta = 0 every epsilon gives log 2)
    batch = next(iter(trainer.get_train_dataloader()))
    losses_logit = -_pair_losses(trainer, batch).double()  # log sigmoid(beta * delta)
    delta_logsig_neg = torch.log1p(-torch.exp(losses_logit))  # log sigmoid(-beta * delta)
    expected = ((-(1 - eps) * losses_logit + eps * delta_logsig_neg) / (1 - 2 * eps)).mean()
    assert _trainer_loss(trainer, batch, {}) == pytest.approx(float(expected), rel=1e-5)


def test_robust_training_logs_dro_metrics_and_moves_weights(tmp_path):
    trainer = _trainer(tmp_path, steps=2, divergence="chi2", radius=0.5)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert {"rewards/margins", "logps/chosen", "dro/max_weight", "dro/effective_sample_size"} <= set(
        logs[0]
    )
    assert logs[-1]["dro/max_weight"] > 0.25  # non-uniform once the losses differ (4 pairs per batch)
    assert logs[-1]["dro/robust_loss"] > logs[-1]["dro/mean_loss"]


def test_collator_keeps_group_ids():
    collator = GroupPreferenceCollator(pad_token_id=0)
    examples = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5], GROUP_KEY: 1},
        {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9], GROUP_KEY: 0},
    ]
    batch = collator(examples)
    assert batch[GROUP_KEY].tolist() == [1, 0]
    assert batch["input_ids"].shape[0] == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dro_method": "dpo++"}, "unknown dro_method 'dpo\\+\\+'; expected one of"),
        ({"divergence": "hellinger"}, "unknown divergence 'hellinger'"),
        ({"divergence": "tv", "radius": 1.5}, "radius"),
        ({"divergence": "kl", "radius": -0.1}, "radius"),
        ({"radius": 0.5}, "radius=0.5 needs a divergence"),
        ({"dro_method": "dr_dpo"}, "needs reg > 0"),
        ({"dro_method": "dr_dpo", "reg": 0.0}, "needs reg > 0"),
        ({"dro_method": "dr_dpo", "reg": 1.0, "divergence": "kl", "radius": 0.5}, "not use them"),
        ({"dro_method": "kldpo", "reg": -1.0}, "reg"),
        ({"dro_method": "group_eg", "group_step": 0.0}, "group_step"),
        ({"reg": 1.0}, "reg is not used"),
        ({"level": "domain"}, "unknown level"),
        ({"level": "group"}, "needs a divergence"),
        ({"dro_batch": "epoch"}, "unknown dro_batch"),
    ],
)
def test_bad_settings_are_rejected(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _args(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "sft"}, "unknown loss 'sft'"),
        ({"train_domains": ("math", "poetry")}, "unknown domain 'poetry'"),
        ({"beta": 0.0}, "beta must be > 0"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"loss": "robust", "divergence": "chi2", "radius": -1.0}, "radius"),
        ({"n_eval": -1}, "n_eval must be >= 0"),
    ],
)
def test_run_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dpo.DPORunConfig(**kwargs)


def test_setting_labels_are_the_results_tables():
    assert dpo.DPORunConfig().setting == "ordinary"
    assert dpo.DPORunConfig(loss="robust", divergence="tv", radius=0.2).setting == "tv 0.2"
    assert dpo.DPORunConfig(loss="robust", divergence="cvar", radius=1.0).setting == "ordinary"
    assert dpo.DPORunConfig(loss="group_eg").setting == "group_eg"
    assert dpo.DPORunConfig(n_eval=0).n_eval == 0  # every held-out pair


def test_old_names_parse_with_a_warning():
    parser = argparse.ArgumentParser()
    dpo.add_cli_arguments(parser)
    for flag, loss in (("--beta-prime", "dr_dpo"), ("--tau", "kldpo")):
        with pytest.warns(FutureWarning, match=f"{flag} is deprecated; use --reg"):
            args = parser.parse_args([flag, "0.3", "--loss", loss, "--out", "unused"])
        config = dataclass_from_args(dpo.DPORunConfig, args)
        assert config.reg == 0.3 and config.robust_fields()["reg"] == 0.3
    with pytest.warns(FutureWarning, match="loss 'group' is deprecated; use 'group_eg'"):
        args = parser.parse_args(["--loss", "group", "--out", "unused"])
        config = dataclass_from_args(dpo.DPORunConfig, args)
    assert config.loss == "group_eg" and config.robust_fields()["dro_method"] == "group_eg"


def test_cli_parses_the_issue_command_and_skips_a_finished_run(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    dpo.add_cli_arguments(parser)
    argv = "--loss robust --divergence tv --radius 0.1 --train-domains math,code --eval-domains reasoning,safety"
    args = parser.parse_args([*argv.split(), "--seed", "3", "--out", str(tmp_path)])
    config = dataclass_from_args(dpo.DPORunConfig, args)
    assert (config.loss, config.divergence, config.radius, config.seed) == ("robust", "tv", 0.1, 3)
    assert config.train_domains == ("math", "code") and config.eval_domains == ("reasoning", "safety")
    calls = []
    fake = {"stage": "dpo", "method": "robust", "per_domain": {"math": {"accuracy": 1.0}}}
    monkeypatch.setattr(dpo, "train_and_evaluate", lambda c: calls.append(c) or fake)
    assert dpo.cli_main(args) == 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["in_distribution"] == {"accuracy": 1.0} and len(calls) == 1
    assert dpo.cli_main(args) == 0
    assert len(calls) == 1  # the finished run was skipped


def test_reference_logps_cache_gives_trls_values(tmp_path):
    first = _trainer(tmp_path, ref_cache_dir=tmp_path / "ref")
    assert len(list((tmp_path / "ref").glob("*.json"))) == 1
    second = _trainer(tmp_path, dro_method="kldpo", reg=1.0, ref_cache_dir=tmp_path / "ref")
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        assert list(second.train_dataset[column]) == pytest.approx(list(first.train_dataset[column]))
