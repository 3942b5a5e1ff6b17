"""The robust reward trainer: radius 0 is TRL, the weights are applied, the global batch under 2 processes,
config validation, the cached fast path and the CLI. Tiny random BERT models and synthetic pairs."""

from __future__ import annotations

import json
import os
import socket
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from datasets import ClassLabel, Dataset
from trl import RewardTrainer

from drostudy.models import load_reward_model
from drostudy.reward import data as reward_data
from drostudy.reward import fast as reward_cached
from drostudy.reward import run as reward_run
from drostudy.reward import trainer as reward
from drostudy.weights import worst_case_weights

DOMAINS = ("code", "math")


def toy_pairs(n: int = 16, seed: int = 0) -> Dataset:
    """Synthetic preference pairs of two domains and two kinds, with pair ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words = " ".join(
            rng.choice(["alpha", "beta", "gamma", "delta", "omega"], size=int(rng.integers(2, 9)))
        )
        rows.append(
            {
                "id": f"toy/{i}",
                "prompt": f"question {i}: {words}?",
                "chosen": f"the correct answer is {i % 7}",
                "rejected": "no idea" if i % 2 else f"the answer is {words}",
                "domain": DOMAINS[i % 2],
                "kind": ("wrong_answer", "refusal")[i % 2 == 0 and i % 4 == 0],
                "source": "toy",
            }
        )
    return Dataset.from_list(rows)


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return load_reward_model("tiny-bert")


def make_trainer(
    cls, tmp_path, batch_size=4, steps=None, seed=0, model=None, optim="adamw_torch", **kwargs
):
    config = reward_run.RMConfig(
        train_domains=DOMAINS,
        eval_domains=DOMAINS,
        batch_size=batch_size,
        learning_rate=1e-2,
        steps=steps or -(-16 // batch_size),  # default: one pass over the 16 toy pairs
        seed=seed,
    )
    overrides = {"logging_steps": 1, "optim": optim}
    model, tok = model or tiny(seed)
    data = reward_data.tokenize_pairs(toy_pairs(), tok, 48, DOMAINS)
    if kwargs.pop("group_names", None):  # names of the integer group ids, as the study run gives them
        data = data.cast_column("group", ClassLabel(names=list(DOMAINS)))
    robust = {k: kwargs.pop(k) for k in ("divergence", "radius", "level") if k in kwargs}
    args = reward.trl_args(config, str(tmp_path), **overrides, **robust)  # TRL's trainer ignores robust
    return cls(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tok,
        **kwargs,
    )


def losses_of(trainer) -> list[float]:
    return [row["loss"] for row in trainer.state.log_history if "loss" in row]


def test_radius_zero_reproduces_trl(tmp_path):
    trl_trainer = make_trainer(RewardTrainer, tmp_path / "trl")
    trl_trainer.train()
    ours = make_trainer(
        reward.RobustRewardTrainer, tmp_path / "ours", divergence="tv", radius=0.0, group_names=DOMAINS
    )
    ours.train()
    assert len(losses_of(ours)) == 4  # 16 pairs / batch 4
    np.testing.assert_allclose(losses_of(ours), losses_of(trl_trainer), rtol=1e-6)
    assert losses_of(ours)[-1] < losses_of(ours)[0] - 1e-3  # training moved: the equality is not vacuous
    for (name, a), (_, b) in zip(
        trl_trainer.model.named_parameters(), ours.model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    row = ours.state.log_history[0]
    for key in (
        "accuracy",
        "margin",
        "mean_reward",
        "num_tokens",
        "dro/max_weight",
        "dro/weight_mass/code",
    ):
        assert key in row
    assert row["dro/max_weight"] == pytest.approx(1 / 4)
    assert row["dro/weight_mass/code"] + row["dro/weight_mass/math"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "divergence,radius,level", [("tv", 0.4, "example"), ("cvar", 0.25, "example"), ("kl", 1.0, "group")]
)
def test_worst_case_weights_are_applied(tmp_path, divergence, radius, level):
    trainer = make_trainer(
        reward.RobustRewardTrainer, tmp_path, divergence=divergence, radius=radius, level=level
    )
    batch = next(iter(trainer.get_train_dataloader()))
    groups = batch["group"].clone()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        rewards = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    rc, rr = torch.chunk(rewards.squeeze(-1), 2)
    per_pair = -torch.nn.functional.logsigmoid(rc - rr)
    if level == "group":
        from drostudy.weights import group_worst_case_weights

        w = group_worst_case_weights(per_pair, groups, divergence, radius)
    else:
        w = worst_case_weights(per_pair, divergence, radius)
    assert not torch.allclose(w, torch.full_like(w, 1 / len(w)))  # the test would be vacuous otherwise
    assert float(loss) == pytest.approx(float((w * per_pair).sum()), rel=1e-5)
    assert float(loss) > float(per_pair.mean())
    # gradient is that of the weighted sum (Danskin), not of the mean
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, dict(batch)).backward()
    head = trainer.model.classifier.weight.grad.clone()
    trainer.model.zero_grad()
    out = trainer.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits.squeeze(-1)
    rc, rr = torch.chunk(out, 2)
    (w * -torch.nn.functional.logsigmoid(rc - rr)).sum().backward()
    torch.testing.assert_close(head, trainer.model.classifier.weight.grad, rtol=1e-5, atol=1e-7)


def test_group_level_needs_groups_and_weights_domains(tmp_path):
    trainer = make_trainer(
        reward.RobustRewardTrainer,
        tmp_path,
        steps=2,
        divergence="tv",
        radius=1.0,
        level="group",
        group_names=DOMAINS,
    )
    trainer.train()
    row = trainer.state.log_history[0]
    masses = sorted([row["dro/weight_mass/code"], row["dro/weight_mass/math"]])
    assert masses == pytest.approx([0.0, 1.0])  # radius 1 TV: all mass on the worse domain
    batch = next(iter(trainer.get_train_dataloader()))
    batch.pop("group")
    with pytest.raises(ValueError, match="group"):
        trainer.compute_loss(trainer.model, batch)


# --- two processes (gloo): the worst case over the global batch ------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world: int, port: int, tmp: str, batch_size: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    trainer = make_trainer(
        reward.RobustRewardTrainer,
        tmp,
        batch_size=batch_size,
        steps=1,
        divergence="tv",
        radius=0.3,
        group_names=DOMAINS,
        optim="sgd",  # Adam would turn the rounding noise of (near-)zero gradients into full-size steps
    )
    trainer.train()
    if rank == 0:
        state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        torch.save(
            {"log": trainer.state.log_history[0], "state": state}, os.path.join(tmp, f"world{world}.pt")
        )
    trainer.accelerator.wait_for_everyone()  # leave together: a rank tearing gloo down early aborts the other


def test_two_processes_use_global_batch_weights(tmp_path):
    """One step with 2 gloo processes x 8 pairs == one process x 16 pairs: same loss, weights, parameters."""
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(tmp_path), 8), nprocs=2, join=True)
    saved = dict(os.environ)
    try:
        _distributed_worker(0, 1, _free_port(), str(tmp_path), 16)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    two, one = (torch.load(tmp_path / f"world{w}.pt") for w in (2, 1))
    for key in (
        "loss",
        "dro/max_weight",
        "dro/effective_sample_size",
        "dro/weight_mass/code",
        "accuracy",
    ):
        assert two["log"][key] == pytest.approx(one["log"][key], rel=1e-5), key
    assert one["log"]["dro/max_weight"] > 1 / 16  # weights are not uniform: the test is not vacuous
    for name, value in one["state"].items():
        torch.testing.assert_close(two["state"][name], value, rtol=1e-5, atol=1e-7, msg=name)


# --- config ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("divergence", "hellinger", "divergence 'hellinger'; expected one of"),
        ("radius", -0.1, "radius"),
        ("radius", 1.5, "radius"),
        ("level", "token", "level 'token'; expected one of \\['example', 'group'\\]"),
        ("engine", "jax", "engine"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("steps", 1.5, "steps must be a positive integer"),
        ("truncate_length", 0, "truncate_length must be a positive integer"),
        (
            "train_domains",
            ("nope",),
            "train_domains has unknown or no domains \\['nope'\\]; expected some of",
        ),
        ("eval_domains", (), "eval_domains"),
        ("train_proportions", (0.5,), "train_proportions must be"),
    ],
)
def test_bad_config_values_are_rejected(field, value, match):
    with pytest.raises(ValueError, match=match):
        reward_run.RMConfig(**{field: value})


def test_config_method_and_defaults():
    assert reward_run.RMConfig().radius == 0.0 and reward_run.RMConfig().method == "ordinary"
    assert reward_run.RMConfig(divergence="cvar", radius=1.0).method == "ordinary"
    assert reward_run.RMConfig(divergence="kl", radius=0.1).method == "robust"


# --- cached fast path -----------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen_layers", [0, 1, 2])
def test_cached_top_equals_full_forward(frozen_layers):
    model, tok = tiny()
    model.eval()
    data = toy_pairs(6)
    features = reward_cached.FrozenFeatures(model, tok, frozen_layers=frozen_layers, truncate_length=48)
    chosen, rejected = features.pairs(data)
    margins = reward_cached.cached_margins(model, chosen, rejected, frozen_layers=frozen_layers)
    full = reward_data.reward_margins(model, tok, reward_data.tokenize_pairs(data, tok, 48, ()))
    np.testing.assert_allclose(margins, full, rtol=1e-4, atol=1e-5)


def test_cls_block_equals_the_whole_block_at_cls_in_value_and_gradient():
    model, _ = tiny()
    model.eval()
    layer = model.base_model.encoder.layer[-1]
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, model.config.hidden_size, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 2 + [0] * 5])
    layer = layer.double()
    attention = reward_cached.create_bidirectional_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=mask
    )
    whole = layer(hidden, attention)
    whole = (whole[0] if isinstance(whole, tuple) else whole)[:, :1]
    ours = reward_cached.cls_block(layer, hidden, mask)
    torch.testing.assert_close(ours, whole, rtol=1e-10, atol=1e-10)
    probe = torch.randn_like(whole)
    (g_whole,) = torch.autograd.grad((whole * probe).sum(), hidden)
    (g_ours,) = torch.autograd.grad((ours * probe).sum(), hidden)
    torch.testing.assert_close(g_ours, g_whole, rtol=1e-10, atol=1e-10)
    # a padded position has no say: changing it moves nothing
    moved = hidden.detach().clone()
    moved[2, 4] += 10.0
    torch.testing.assert_close(reward_cached.cls_block(layer, moved, mask)[2], ours[2].detach())


# --- command line ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine,frozen", [("trl", "0"), ("cached", "1")])
def test_cli_writes_metrics_and_skips_finished_run(tmp_path, monkeypatch, capsys, engine, frozen):
    from drostudy.__main__ import main

    def splits(config):
        return toy_pairs(16, seed=config.seed), toy_pairs(12, seed=99)

    monkeypatch.setattr(reward_data, "prepare_splits", splits)
    monkeypatch.setattr(reward_cached, "prepare_splits", splits)
    argv = "rm --model tiny-bert --divergence tv --radius 0.2 --train-domains code,math".split()
    argv += [
        "--eval-domains",
        "math",
        "--batch-size",
        "4",
        "--engine",
        engine,
        "--frozen-layers",
        frozen,
    ]
    argv += ["--truncate-length", "48", "--steps", "4", "--logging-steps", "2", "--seed", "0"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stage"] == "rm" and metrics["method"] == "robust"
    assert set(metrics["per_domain"]) == set(DOMAINS)
    assert 0.0 <= metrics["per_domain"]["math"]["accuracy"] <= 1.0
    assert metrics["out_of_distribution"]["accuracy"] == metrics["per_domain"]["math"]["accuracy"]
    assert metrics["config"]["radius"] == 0.2 and metrics["history"]
    assert {"train_s", "eval_s", "total_s"} <= set(metrics["timings"])
    assert main(argv) == 0
    assert "skipping" in capsys.readouterr().out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
