"""CUDA checks (issue 27), run by scripts/gpu_check.sh on the lent GPU machine: the real CUDA code paths on
tiny random models. Worst-case weights and robust losses on CUDA tensors equal the CPU results (float32,
float64; bf16 losses at a bf16 tolerance); each Robust* TRL drop-in trains a few steps on the GPU (fp32 and
bf16) and at radius 0 equals the plain TRL trainer (GRPO's test is in tests/test_grpo_trainer.py, which
gpu_check.sh also runs); the DPO fast path equals RobustDPOTrainer on the GPU; the RL testbed on GPU
tensors equals the CPU run; a robust vs plain step timing is printed (`gpu-timing:` lines), not asserted.

Without CUDA every test here is collected and skipped with its reason (tests/conftest.py). With
DROSTUDY_GPU_TESTS_ON_CPU=1 they run on the CPU instead ("cpu" against "cpu", slow on a laptop): a
rehearsal of this file's code before GPU time is spent, not a GPU check. trl and datasets are imported only
by the tests that need them (on the GPU machine they come from the wheels of scripts/gpu_wheels.txt).
"""

from __future__ import annotations

import math
import os
import statistics
import time

import pytest
import torch
from toy_pairs import chat_pairs, lora_grads, text_pairs

from drostudy import losses as L
from drostudy.weights import (
    DIVERGENCES,
    group_worst_case_weights,
    penalised_weights,
    worst_case_weights,
)

pytestmark = pytest.mark.gpu
ON_CPU = os.environ.get("DROSTUDY_GPU_TESTS_ON_CPU") == "1"
DEVICE = torch.device("cpu" if ON_CPU else "cuda")
# device against CPU: the same float64 solvers run on both, so float64 agrees to rounding and float32 to the
# float32 cast of the weights; bf16 inputs go through float32/float64 internally, so bf16 outputs agree to
# a bf16 rounding step or two (eps 2**-7)
TOL = {
    torch.float64: dict(rtol=1e-9, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
}
RADII = {
    "tv": (0.0, 0.05, 0.4, 1.0),
    "kl": (0.0, 0.01, 0.5, 5.0),
    "chi2": (0.0, 0.1, 2.0, 50.0),
    "cvar": (1.0, 0.7, 0.2, 0.01),
}
SIZES = (1, 2, 17, 256, 4096)


def _losses(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Losses with a spread and ties (a third rounded to one decimal), on the CPU."""
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, generator=g, dtype=torch.float64)
    x[: n // 3] = x[: n // 3].round(decimals=1)
    return x.to(dtype)


def _close(got: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, msg: str = "") -> None:
    assert got.device.type == DEVICE.type and got.dtype == expected.dtype, msg
    torch.testing.assert_close(got.cpu(), expected, **TOL[dtype], msg=msg)


# --- worst-case weights and robust losses ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_worst_case_weights_on_device_equal_cpu(dtype):
    assert set(RADII) == set(DIVERGENCES)  # a new divergence needs radii here
    for n in SIZES:
        losses = _losses(n, dtype, seed=n)
        on_device = losses.to(DEVICE)
        for divergence, radii in RADII.items():
            for radius in radii:
                for eps in (0.0, 0.1) if n >= 17 else (0.0,):
                    msg = f"{divergence} radius {radius} n {n} outlier_fraction {eps}"
                    expected = worst_case_weights(losses, divergence, radius, outlier_fraction=eps)
                    got = worst_case_weights(on_device, divergence, radius, outlier_fraction=eps)
                    _close(got, expected, dtype, msg)
                    assert abs(float(got.double().sum()) - 1.0) < 1e-5, msg
        prior = torch.softmax(_losses(n, torch.float64, seed=n + 1), 0).to(dtype)
        groups = torch.arange(n) % 3
        for divergence in DIVERGENCES:
            radius = RADII[divergence][2]
            expected = worst_case_weights(losses, divergence, radius, prior=prior)
            got = worst_case_weights(on_device, divergence, radius, prior=prior.to(DEVICE))
            _close(got, expected, dtype, f"{divergence} prior n {n}")
            expected = group_worst_case_weights(losses, groups, divergence, radius)
            got = group_worst_case_weights(on_device, groups.to(DEVICE), divergence, radius)
            _close(got, expected, dtype, f"{divergence} groups n {n}")
        for divergence in ("kl", "chi2"):
            for reg in (0.1, 1.0, math.inf):
                expected = penalised_weights(losses, divergence, reg)
                got = penalised_weights(on_device, divergence, reg)
                _close(got, expected, dtype, f"penalised {divergence} reg {reg} n {n}")


def _loss_cases(n: int, dtype: torch.dtype):
    """(name, function of the input tensors, CPU inputs) for every robust loss of drostudy.losses."""
    g = torch.Generator().manual_seed(n)
    logps = [
        (-20.0 + 5.0 * torch.randn(n, generator=g, dtype=torch.float64)).to(dtype) for _ in range(4)
    ]
    per_example = _losses(n, torch.float64, seed=n).abs().to(dtype)
    groups = torch.arange(n) % 3
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    cases = []
    for divergence, radii in RADII.items():
        radius = radii[2]
        cases += [
            (
                f"robust_loss {divergence}",
                lambda x, d=divergence, r=radius: L.robust_loss(x, d, r),
                [per_example],
            ),
            (
                f"robust_loss {divergence} groups",
                lambda x, d=divergence, r=radius: L.robust_loss(x, d, r, groups=groups.to(x.device)),
                [per_example],
            ),
            (
                f"robust_dpo_loss {divergence}",
                lambda a, b, c, e, d=divergence, r=radius: L.robust_dpo_loss(a, b, c, e, 0.1, d, r),
                logps,
            ),
            (
                f"robust_bradley_terry_loss {divergence}",
                lambda a, b, d=divergence, r=radius: L.robust_bradley_terry_loss(a / 10, b / 10, d, r),
                logps[:2],
            ),
        ]
    cases += [
        (
            "robust_loss doro",
            lambda x: L.robust_loss(x, "chi2", 0.5, outlier_fraction=0.1),
            [per_example],
        ),
        ("dr_dpo_loss", lambda x: L.dr_dpo_loss(x, 0.5), [per_example]),
        ("kldpo_loss", lambda x: L.kldpo_loss(x, 0.5), [per_example]),
        (
            "group_robust_loss",
            lambda x: L.group_robust_loss(x, groups.to(x.device), q.to(x.device)),
            [per_example],
        ),
    ]
    return cases


def _run_loss(fn, inputs):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    out = fn(*leaves)
    out.loss.backward()
    return out, [leaf.grad for leaf in leaves]


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.bfloat16], ids=["float32", "float64", "bf16"]
)
def test_robust_losses_on_device_equal_cpu(dtype):
    """Value, weights, gradient and metrics. bf16: the dtype of TRL's log-probs and rewards under bf16
    autocast on a GPU; the weights are solved in float64 and cast back. Its CPU reference takes the same
    bf16 inputs in float32: drostudy's CPU fast paths (chi2, cvar) go through numpy, which has no bf16."""
    bf16 = dtype == torch.bfloat16
    if bf16 and DEVICE.type == "cpu":
        pytest.xfail("bf16 on the CPU: the chi2/cvar fast paths call .numpy(), which has no bf16")
    for n in (8, 64) if bf16 else (2, 8, 257):
        for name, fn, inputs in _loss_cases(n, dtype):
            expected, expected_grads = _run_loss(fn, [x.float() for x in inputs] if bf16 else inputs)
            if bf16:
                expected = expected._replace(
                    loss=expected.loss.to(dtype), weights=expected.weights.to(dtype)
                )
                expected_grads = [g.to(dtype) for g in expected_grads]
            got, grads = _run_loss(fn, [x.to(DEVICE) for x in inputs])
            msg = f"{name} n {n}"
            _close(got.loss.detach(), expected.loss.detach(), dtype, msg)
            _close(got.weights, expected.weights, dtype, msg)
            for grad, expected_grad in zip(grads, expected_grads, strict=True):
                _close(grad, expected_grad, dtype, msg)
            assert got.metrics.keys() == expected.metrics.keys(), msg
            for key, value in expected.metrics.items():
                tol = TOL[dtype]
                assert got.metrics[key] == pytest.approx(value, rel=tol["rtol"], abs=tol["atol"]), (
                    f"{msg} {key}"
                )
    # the group-robust update and group means (the DPO group_eg objective's state)
    per_example = _losses(64, dtype).abs()
    groups = torch.arange(64) % 3
    means = L.group_mean_losses(per_example.float() if bf16 else per_example, groups, 3)
    _close(L.group_mean_losses(per_example.to(DEVICE), groups.to(DEVICE), 3), means.to(dtype), dtype)
    q = torch.tensor([0.5, 0.3, 0.2], dtype=dtype)
    expected = L.eg_update(q.float() if bf16 else q, means, 2.0).to(dtype)
    _close(L.eg_update(q.to(DEVICE), means.to(DEVICE, dtype), 2.0), expected, dtype)


# --- the TRL drop-ins on the GPU -------------------------------------------------------------------------

PRECISIONS = [pytest.param(False, id="fp32"), pytest.param(True, id="bf16")]
# radius 0 against the plain TRL trainer, both on the device: the same kernels in the same order
# (deterministic algorithms on), so fp32 agrees to a few ulps of the reduction order; under bf16 autocast
# the robust path's reduction of the bf16 per-pair losses differs from TRL's mean by bf16 rounding
LOSS_REL = {False: 1e-5, True: 1e-2}
PARAM_ATOL = {False: 1e-5, True: 5e-4}
MOVED = 4  # the robust run's parameters differ from TRL's by more than MOVED x PARAM_ATOL


@pytest.fixture(scope="module", autouse=True)
def _deterministic():
    """Deterministic CUDA kernels where torch has them (warn elsewhere), so radius 0 can equal TRL."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before)


def _trl():
    pytest.importorskip("datasets", reason="datasets is not installed (scripts/gpu_wheels.txt)")
    return pytest.importorskip("trl", reason="trl is not installed (scripts/gpu_wheels.txt)")


def _pairs(n: int = 8):
    from datasets import Dataset

    return Dataset.from_list(text_pairs(n))


def _args(config_cls, out, bf16: bool, **kw):
    base = dict(
        output_dir=str(out),
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        logging_steps=1,
        use_cpu=ON_CPU,
        bf16=bf16,
        max_steps=2,
    )
    return config_cls(**(base | kw))


def _logged(trainer) -> list[dict]:
    return [row for row in trainer.state.log_history if "loss" in row]


def _params(trainer) -> torch.Tensor:
    return torch.cat([p.detach().float().flatten().cpu() for p in trainer.model.parameters()])


def _on_device(trainer) -> bool:
    return all(p.device.type == DEVICE.type for p in trainer.model.parameters())


def _check_runs(runs: dict, bf16: bool) -> None:
    """plain (TRL), off (drop-in, DRO off), zero (drostudy's path at radius 0), robust (a real ball)."""
    losses = {name: [row["loss"] for row in _logged(t)] for name, t in runs.items()}
    params = {name: _params(t) for name, t in runs.items()}
    assert all(_on_device(t) for t in runs.values())
    assert len(losses["plain"]) == 2 and all(math.isfinite(v) for v in sum(losses.values(), []))
    for name in ("off", "zero"):
        assert losses[name] == pytest.approx(losses["plain"], rel=LOSS_REL[bf16]), name
        torch.testing.assert_close(
            params[name], params["plain"], rtol=0, atol=PARAM_ATOL[bf16], msg=name
        )
    moved = (params["robust"] - params["plain"]).abs().max()
    assert (
        moved > MOVED * PARAM_ATOL[bf16]
    )  # the ball changes the training: the equalities say something
    last = _logged(runs["robust"])[-1]
    assert last["dro/robust_loss"] >= last["dro/mean_loss"] - 1e-6


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    from drostudy.models import tiny_policy

    path = tmp_path_factory.mktemp("policy")
    model, tok = tiny_policy()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("bf16", PRECISIONS)
def test_dpo_dropin_trains_on_device_and_radius_zero_is_trl(policy_path, tmp_path, bf16):
    trl = _trl()
    from drostudy import RobustDPOConfig, RobustDPOTrainer
    from drostudy.models import smollm2_tokenizer

    settings = {
        "plain": (trl.DPOTrainer, {}),
        "off": (RobustDPOTrainer, {}),
        "zero": (RobustDPOTrainer, dict(divergence="kl", radius=0.0)),
        "robust": (RobustDPOTrainer, dict(divergence="kl", radius=0.5)),
    }
    runs = {}
    for name, (cls, robust) in settings.items():
        args = _args(
            RobustDPOConfig,
            tmp_path / name,
            bf16,
            learning_rate=5e-3,
            beta=0.5,
            max_length=64,
            per_device_train_batch_size=4,
            **robust,
        )
        runs[name] = cls(
            model=policy_path, args=args, train_dataset=_pairs(), processing_class=smollm2_tokenizer()
        )
        runs[name].train()
    _check_runs(runs, bf16)


@pytest.mark.parametrize("bf16", PRECISIONS)
def test_reward_dropin_trains_on_device_and_radius_zero_is_trl(tmp_path, bf16):
    trl = _trl()
    from drostudy import RobustRewardConfig, RobustRewardTrainer
    from drostudy.models import tiny_reward_model

    settings = {
        "plain": (trl.RewardTrainer, {}),
        "off": (RobustRewardTrainer, {}),
        "zero": (RobustRewardTrainer, dict(divergence="tv", radius=0.0)),
        "robust": (
            RobustRewardTrainer,
            dict(divergence="chi2", radius=1.0, level="group", group_column="domain"),
        ),
    }
    runs = {}
    for name, (cls, robust) in settings.items():
        model, tok = tiny_reward_model(family="llama")  # the same random weights every call
        args = _args(
            RobustRewardConfig,
            tmp_path / name,
            bf16,
            learning_rate=1e-2,
            per_device_train_batch_size=4,
            **robust,
        )
        runs[name] = cls(model=model, args=args, train_dataset=_pairs(), processing_class=tok)
        runs[name].train()
    _check_runs(runs, bf16)


def _short_and_sweet(completions, **kwargs):
    """A toy reward with a spread across prompts: shorter completions score higher."""
    return [-float(len(c)) for c in completions]


@pytest.mark.parametrize("bf16", PRECISIONS)
def test_rloo_dropin_trains_on_device_and_radius_zero_is_trl(policy_path, tmp_path, bf16):
    trl = _trl()
    from datasets import Dataset

    from drostudy import RobustRLOOConfig, RobustRLOOTrainer
    from drostudy.models import smollm2_tokenizer

    prompts = Dataset.from_list([{"prompt": f"Say something about {w}."} for w in "abcdefgh"])
    settings = {
        "plain": (trl.RLOOTrainer, {}),
        "off": (RobustRLOOTrainer, {}),
        "zero": (RobustRLOOTrainer, dict(divergence="tv", radius=0.0)),
        "robust": (RobustRLOOTrainer, dict(divergence="tv", radius=0.4)),
    }
    runs = {}
    for name, (cls, robust) in settings.items():
        args = _args(
            RobustRLOOConfig,
            tmp_path / name,
            bf16,
            learning_rate=5e-3,
            per_device_train_batch_size=4,
            num_generations=2,
            max_completion_length=4,
            gradient_checkpointing=False,
            **robust,
        )
        runs[name] = cls(
            model=policy_path,
            reward_funcs=_short_and_sweet,
            args=args,
            train_dataset=prompts,
            processing_class=smollm2_tokenizer(),
        )
        runs[name].train()
    losses = {name: [row["loss"] for row in _logged(t)] for name, t in runs.items()}
    # RLOO's logged loss is ~0 by construction; the parameters are what the advantages moved
    params = {name: _params(t) for name, t in runs.items()}
    assert all(_on_device(t) for t in runs.values()) and len(losses["plain"]) == 2
    for name in ("off", "zero"):
        assert losses[name] == pytest.approx(losses["plain"], rel=LOSS_REL[bf16], abs=1e-6), name
        torch.testing.assert_close(
            params[name], params["plain"], rtol=0, atol=PARAM_ATOL[bf16], msg=name
        )
    assert (params["robust"] - params["plain"]).abs().max() > MOVED * PARAM_ATOL[bf16]
    assert _logged(runs["robust"])[-1]["dro/max_weight"] > 1 / 4  # 4 prompts per generation batch


# --- the DPO fast path on the GPU ------------------------------------------------------------------------

FAST_LAYERS, FAST_LORA_LAYERS = 4, 2


def _fast_config(**kw):
    from drostudy.dpo.fast_train import FastDPORunConfig

    base = dict(
        model="tiny-llama",
        lora_layers=FAST_LORA_LAYERS,
        beta=0.5,
        batch_size=8,
        max_length=64,
        steps=1,
        n_train=8,
    )
    return FastDPORunConfig(**(base | kw))


@pytest.fixture(scope="module")
def fast_setup(tmp_path_factory):
    """tests/test_dpo_fast.py's set-up on the device: a 4-layer tiny Llama in RobustDPOTrainer, LoRA on the
    top 2 with B perturbed, and the same 8 pairs as the trainer's batch (on the device) and as fast pairs."""
    _trl()
    from datasets import Dataset
    from transformers import LlamaForCausalLM

    from drostudy.dpo import fast
    from drostudy.dpo.run import trl_config
    from drostudy.dpo.trainer import RobustDPOTrainer
    from drostudy.models import _tiny_llama_config, smollm2_tokenizer
    from drostudy.runs import lora_config

    tok = smollm2_tokenizer()
    llama = _tiny_llama_config(tok)
    llama.num_hidden_layers = FAST_LAYERS
    torch.manual_seed(0)
    config = _fast_config()
    trainer = RobustDPOTrainer(
        model=LlamaForCausalLM(llama),
        args=trl_config(config, str(tmp_path_factory.mktemp("dpo_fast")), use_cpu=ON_CPU),
        train_dataset=Dataset.from_list(chat_pairs()),
        processing_class=tok,
        peft_config=lora_config(config, FAST_LAYERS),
    )
    assert _on_device(trainer)
    generator = torch.Generator().manual_seed(1)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # LoRA starts at B = 0, where policy == reference and A gets no gradient
            param.data = 0.3 * torch.randn(param.shape, generator=generator).to(param.device)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(8)])
    batch = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    pairs, _ = fast.encode_pairs(tok, chat_pairs(), config.max_length)
    cache = fast.TrunkCache(trainer.model, FAST_LAYERS - FAST_LORA_LAYERS)
    return trainer, batch, pairs, cache


@pytest.mark.parametrize(
    "settings",
    [
        {"loss": "ordinary"},
        {"loss": "robust", "divergence": "kl", "radius": 0.3},
        {"loss": "kldpo", "reg": 0.1},
    ],
)
def test_dpo_fast_path_equals_the_trainer_on_device(fast_setup, settings):
    """tests/test_dpo_fast.py::test_loss_and_lora_gradients_equal_the_trainers with the model on the device;
    the tolerance allows the GPU's other reduction order (the CPU test holds 1e-5)."""
    from drostudy.dpo import fast, fast_train

    trainer, batch, pairs, cache = fast_setup
    config = _fast_config(**settings)
    off = dict(divergence=None, radius=0.0, dro_method="worst_case", reg=None, group_step=None)
    for name, value in (off | config.robust_fields()).items():
        setattr(trainer.args, name, value)
    trainer.loss_types = list(trainer.args.loss_type)
    trainer.loss_weights = [1.0] * len(trainer.loss_types)
    trainer.label_smoothing = trainer.args.label_smoothing
    trainer.model.train()
    expected_loss = trainer.compute_loss(trainer.model, dict(batch))
    expected_loss.backward()
    expected = lora_grads(trainer.model)
    logps = fast.pair_logps(trainer.model, cache, pairs)
    assert logps[0].device.type == DEVICE.type
    out, _ = fast_train.objective(
        config, logps, (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    )
    out.loss.backward()
    got = lora_grads(trainer.model)
    assert float(out.loss.detach()) == pytest.approx(float(expected_loss.detach()), rel=1e-4)
    assert got.keys() == expected.keys() and len(got) == 7 * 2 * FAST_LORA_LAYERS
    scale = max(float(g.abs().max()) for g in expected.values())
    assert scale > 1e-3  # the comparison would be vacuous on zero gradients
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-4 * scale, msg=name)


# --- the RL testbed on GPU tensors -----------------------------------------------------------------------


def _bandit_on(bandit, device):
    return bandit._replace(
        **{f: getattr(bandit, f).to(device) for f in bandit._fields if f != "domains"}
    )


def test_testbed_exact_quantities_on_device_equal_cpu():
    from test_testbed import synthetic_bandit

    from drostudy.rl.testbed import evaluate_policy, prompt_values, robust_objective

    bandit = synthetic_bandit(n_prompts=40)
    on_device = _bandit_on(bandit, DEVICE)
    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    _close(
        prompt_values(theta.to(DEVICE), on_device, 0.3), prompt_values(theta, bandit, 0.3), torch.float64
    )
    for divergence, radii in RADII.items():
        grads = []
        for b, t in ((bandit, theta), (on_device, theta.to(DEVICE))):
            leaf = t.clone().requires_grad_(True)
            value, weights = robust_objective(leaf, b, 0.1, divergence, radii[2])
            value.backward()
            grads.append((value.detach(), weights, leaf.grad))
        for got, expected in zip(grads[1], grads[0], strict=True):
            _close(got, expected, torch.float64, divergence)
    expected = evaluate_policy(theta, bandit)
    got = evaluate_policy(theta.to(DEVICE), on_device)
    assert got[["domain", "metric"]].equals(expected[["domain", "metric"]])
    assert got["value"].to_numpy() == pytest.approx(expected["value"].to_numpy(), rel=1e-9, abs=1e-12)


def test_testbed_runs_on_device_equal_cpu():
    """The minibatch algorithm and the full-batch solver with the bandit on the device: the same iterates as
    on the CPU (same seeded batch order and draws; float64)."""
    import dataclasses

    from test_testbed import SMALL, synthetic_bandit

    from drostudy.rl.testbed import BanditConfig, run_minibatch, solve_full

    bandit = synthetic_bandit()
    on_device = _bandit_on(bandit, DEVICE)
    for divergence, radii in RADII.items():
        config = BanditConfig(
            **dict(SMALL, steps=10, full_steps=50), divergence=divergence, radius=radii[2]
        )
        theta, history = run_minibatch(bandit, config, (5, 10), (divergence, radii[2]))
        got, got_history = run_minibatch(on_device, config, (5, 10), (divergence, radii[2]))
        _close(got, theta, torch.float64, divergence)
        for row, expected in zip(got_history, history, strict=True):
            assert row["objective"] == pytest.approx(expected["objective"], rel=1e-9), divergence
        best_theta, best = solve_full(bandit, dataclasses.replace(config, full_steps=50))
        got_theta, got_best = solve_full(on_device, dataclasses.replace(config, full_steps=50))
        _close(got_theta, best_theta, torch.float64, divergence)
        assert got_best == pytest.approx(best, rel=1e-9)


# --- timing: robust vs plain step ------------------------------------------------------------------------


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _median_ms(fns: dict, rounds: int = 25, warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of each function, the functions interleaved round by round (so drift in clocks or
    load hits all of them alike)."""
    times = {name: [] for name in fns}
    for round_ in range(warmup + rounds):
        for name, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            if round_ >= warmup:
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def test_robust_vs_plain_step_time(policy_path, tmp_path):
    """Printed, not asserted: one DPO forward + backward on a batch of 8 pairs, TRL's DPOTrainer against
    RobustDPOTrainer (kl, radius 0.5; the worst case solved on the device), and the weights alone."""
    trl = _trl()
    from drostudy import RobustDPOConfig, RobustDPOTrainer
    from drostudy.models import smollm2_tokenizer

    trainers = {}
    for name, cls, robust in [
        ("plain", trl.DPOTrainer, {}),
        ("robust", RobustDPOTrainer, dict(divergence="kl", radius=0.5)),
    ]:
        args = _args(
            RobustDPOConfig,
            tmp_path / name,
            False,
            beta=0.5,
            max_length=64,
            per_device_train_batch_size=8,
            **robust,
        )
        trainers[name] = cls(
            model=policy_path, args=args, train_dataset=_pairs(), processing_class=smollm2_tokenizer()
        )
    batch = next(iter(trainers["plain"].get_train_dataloader()))

    def step(trainer):
        def run():
            trainer.model.train()
            trainer.compute_loss(trainer.model, dict(batch)).backward()
            trainer.model.zero_grad(set_to_none=True)

        return run

    rounds = 25 if DEVICE.type == "cuda" else 3  # a CPU rehearsal only checks that the code runs
    ms = _median_ms({name: step(t) for name, t in trainers.items()}, rounds=rounds)
    device = torch.cuda.get_device_name(0) if DEVICE.type == "cuda" else "cpu"
    print(
        f"\ngpu-timing: {device}: DPO step (tiny Llama, 8 pairs, fp32) plain {ms['plain']:.2f} ms, "
        f"robust kl 0.5 {ms['robust']:.2f} ms, ratio {ms['robust'] / ms['plain']:.3f} "
        f"(medians of {rounds} interleaved rounds)"
    )
    losses = _losses(4096, torch.float32).to(DEVICE)
    solve = {d: (lambda d=d: worst_case_weights(losses, d, RADII[d][2])) for d in DIVERGENCES}
    ms = _median_ms(solve, rounds=rounds)
    print(
        "gpu-timing: worst_case_weights n=4096 float32: "
        + ", ".join(f"{d} {v:.3f} ms" for d, v in ms.items())
    )
    assert all(math.isfinite(v) for v in ms.values())
