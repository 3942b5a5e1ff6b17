"""Robust losses: radius 0 is the ordinary mean, Danskin gradients, the BT/DPO formulas and the peers."""

import math

import pytest
import torch

from drostudy import losses
from drostudy.weights import DIVERGENCES, worst_case_weights

# The radius that makes each ball a single point (the uniform distribution): cvar's radius is alpha.
ZERO_RADIUS = {"cvar": 1.0}
# A radius strictly inside each ball, so the worst case is not uniform.
SOME_RADIUS = {"tv": 0.2, "kl": 0.3, "chi2": 0.3, "cvar": 0.4}


def _losses(n=7, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen, dtype=dtype) * 3


def _model_losses(params, x, y):
    """Per-example squared errors of a linear model: params (d,), x (n, d), y (n,) -> (n,)."""
    return (x @ params - y) ** 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_radius_zero_is_the_mean(divergence, dtype):
    per_example = _losses(dtype=dtype).requires_grad_()
    out = losses.robust_loss(per_example, divergence, ZERO_RADIUS.get(divergence, 0.0))
    assert torch.allclose(out.loss, per_example.mean(), rtol=0, atol=10 * torch.finfo(dtype).eps)
    assert torch.equal(out.weights, torch.full_like(out.weights, 1 / 7))
    assert out.metrics["dro/effective_sample_size"] == pytest.approx(7)
    assert out.metrics["dro/entropy"] == pytest.approx(math.log(7))
    assert out.metrics["dro/robust_loss"] == pytest.approx(out.metrics["dro/mean_loss"])


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradient_is_the_weighted_sum_of_per_example_gradients(divergence):
    gen = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(9, 3, generator=gen, dtype=torch.float64),
        torch.randn(9, generator=gen, dtype=torch.float64),
    )
    params = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    out = losses.robust_loss(_model_losses(params, x, y), divergence, SOME_RADIUS[divergence])
    (grad,) = torch.autograd.grad(out.loss, params)
    jac = torch.autograd.functional.jacobian(lambda p: _model_losses(p, x, y), params.detach())  # (n, d)
    assert not out.weights.requires_grad
    assert not torch.allclose(out.weights, torch.full_like(out.weights, 1 / 9))
    assert torch.allclose(grad, out.weights @ jac, rtol=1e-12, atol=1e-12)
    assert out.loss.item() == pytest.approx(float(out.weights @ out.per_example.detach()), rel=1e-12)
    assert out.metrics["dro/robust_loss"] > out.metrics["dro/mean_loss"]


def test_weights_match_the_weights_module_and_metrics():
    per_example = _losses()
    out = losses.robust_loss(per_example, "tv", 0.2)
    expected = worst_case_weights(per_example, "tv", 0.2)
    assert torch.allclose(out.weights, expected)
    assert out.metrics["dro/max_weight"] == pytest.approx(float(expected.max()))
    assert out.metrics["dro/effective_sample_size"] == pytest.approx(float(1 / (expected**2).sum()))
    vertex = losses.weight_metrics(torch.tensor([0.0, 1.0, 0.0]))
    assert vertex == {"dro/max_weight": 1.0, "dro/effective_sample_size": 1.0, "dro/entropy": 0.0}


def test_group_weights_are_shared_inside_a_group():
    per_example = _losses(6)
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    out = losses.robust_loss(per_example, "tv", 0.3, groups=groups)
    assert out.weights.sum().item() == pytest.approx(1.0)
    assert torch.allclose(out.weights[:2], out.weights[0].expand(2))
    assert torch.allclose(out.weights[2:5], out.weights[2].expand(3))


def test_bradley_terry_by_hand():
    chosen, rejected, margin = (
        torch.tensor([1.0, -0.5]),
        torch.tensor([0.2, 0.7]),
        torch.tensor([0.3, 0.0]),
    )
    expected = [
        math.log1p(math.exp(-(c - r - m)))
        for c, r, m in zip([1.0, -0.5], [0.2, 0.7], [0.3, 0.0], strict=True)
    ]
    assert torch.allclose(losses.bradley_terry_loss(chosen, rejected, margin), torch.tensor(expected))
    no_margin = losses.bradley_terry_loss(chosen, rejected)
    assert no_margin[0].item() == pytest.approx(math.log1p(math.exp(-0.8)), rel=1e-6)
    out = losses.robust_bradley_terry_loss(chosen, rejected)
    assert out.loss.item() == pytest.approx(no_margin.mean().item(), rel=1e-6)
    assert out.metrics["rewards/accuracy"] == 0.5


def test_dpo_by_hand():
    pc, pr = torch.tensor([-3.0, -4.0], requires_grad=True), torch.tensor([-5.0, -2.0])
    rc, rr = torch.tensor([-3.5, -4.0]), torch.tensor([-4.5, -2.5])
    beta = 0.5
    lossv, chosen_rewards, rejected_rewards = losses.dpo_loss(pc, pr, rc, rr, beta=beta)
    # pair 0: logits = (0.5) - (-0.5) = 1; pair 1: (0) - (0.5) = -0.5
    expected = torch.tensor([math.log1p(math.exp(-beta * 1.0)), math.log1p(math.exp(beta * 0.5))])
    assert torch.allclose(lossv, expected)
    assert torch.allclose(chosen_rewards, torch.tensor([0.25, 0.0]))
    assert torch.allclose(rejected_rewards, torch.tensor([-0.25, 0.25]))
    assert (
        lossv.requires_grad and not chosen_rewards.requires_grad and not rejected_rewards.requires_grad
    )
    out = losses.robust_dpo_loss(pc, pr, rc, rr, beta=beta, divergence="cvar", radius=0.5)
    assert out.loss.item() == pytest.approx(expected.max().item(), rel=1e-6)  # worst half of 2 pairs
    assert out.metrics["rewards/accuracy"] == 0.5


def test_dr_dpo_limits_weights_and_gradient():
    per_example = _losses().requires_grad_()
    detached = per_example.detach()
    big = losses.dr_dpo_loss(per_example, reg=1e7)
    assert big.loss.item() == pytest.approx(detached.mean().item(), rel=1e-6)
    small = losses.dr_dpo_loss(per_example, reg=1e-4)
    assert small.loss.item() == pytest.approx(detached.min().item(), abs=1e-3)
    out = losses.dr_dpo_loss(per_example, reg=0.7)
    assert torch.allclose(out.weights, torch.softmax(-detached / 0.7, 0))
    (grad,) = torch.autograd.grad(out.loss, per_example)
    assert torch.allclose(grad, out.weights, rtol=1e-12)
    assert out.metrics["dro/robust_loss"] < out.metrics["dro/mean_loss"]  # soft-min: below the mean
    huge = losses.dr_dpo_loss(torch.tensor([1000.0, 2000.0], dtype=torch.float64), reg=1e-3)
    assert huge.loss.item() == pytest.approx(1000.0 + 1e-3 * math.log(2))


def test_kldpo_weights_formula_and_clamp():
    per_example = torch.tensor([0.1, 0.5, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    tau = 0.8
    detached = per_example.detach()
    raw = torch.exp((detached - detached.mean()) / tau)
    assert raw.max() > 10  # the clamp is active for the largest loss
    raw = raw.clamp(max=10.0)
    out = losses.kldpo_loss(per_example, reg=tau)
    assert out.loss.item() == pytest.approx(float((raw * detached).mean()), rel=1e-12)
    assert torch.allclose(out.weights, raw / raw.sum())
    (grad,) = torch.autograd.grad(out.loss, per_example)
    assert torch.allclose(grad, raw / 4, rtol=1e-12)  # detached, not renormalised
    assert out.metrics["dro/max_raw_weight"] == 10.0
    loose = losses.kldpo_loss(per_example, reg=tau, clamp=1e9)
    assert loose.metrics["dro/max_raw_weight"] > 10.0


def test_eg_update_moves_mass_to_the_worst_group_and_stays_on_the_simplex():
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    group_losses = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    q1 = losses.eg_update(q, group_losses, step=0.5)
    assert q1.sum().item() == pytest.approx(1.0) and (q1 >= 0).all()
    assert q1[1] > q[1] and q1[2] < q[2]
    expected = q * torch.exp(0.5 * group_losses)
    assert torch.allclose(q1, expected / expected.sum())
    q_extreme = losses.eg_update(q, group_losses * 1e4, step=10.0)  # exp overflows outside log space
    assert torch.isfinite(q_extreme).all() and q_extreme[1].item() == pytest.approx(1.0)
    absent = losses.eg_update(q, torch.tensor([1.0, 3.0, float("nan")], dtype=torch.float64), step=0.5)
    assert absent[2] == q[2] and absent.sum().item() == pytest.approx(1.0) and absent[1] > absent[0]
    dead = losses.eg_update(torch.tensor([0.0, 1.0]), torch.tensor([5.0, 1.0]), step=1.0)
    assert dead.tolist() == [0.0, 1.0]  # multiplicative updates cannot revive a group with zero mass


def test_group_robust_loss_by_hand_and_absent_groups():
    per_example = torch.tensor([1.0, 3.0, 2.0, 6.0], dtype=torch.float64, requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([0.2, 0.8], dtype=torch.float64)
    out = losses.group_robust_loss(per_example, groups, q)
    assert out.loss.item() == pytest.approx(0.2 * 2.0 + 0.8 * 4.0)
    assert torch.allclose(out.weights, torch.tensor([0.1, 0.1, 0.4, 0.4], dtype=torch.float64))
    means = losses.group_mean_losses(per_example, groups, num_groups=3)
    assert means[:2].tolist() == [2.0, 4.0] and math.isnan(means[2])
    q3 = torch.tensor([0.1, 0.4, 0.5], dtype=torch.float64)  # group 2 absent: renormalise over 0 and 1
    out3 = losses.group_robust_loss(per_example, groups, q3)
    assert out3.loss.item() == pytest.approx(out.loss.item())
    assert out3.weights.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda x: losses.dpo_loss(x, x, x, x, beta=0.0), "beta"),
        (lambda x: losses.dr_dpo_loss(x, reg=-1.0), "reg"),
        (lambda x: losses.kldpo_loss(x, reg=0.0), "reg"),
        (lambda x: losses.eg_update(torch.ones(2) / 2, torch.ones(2), step=0.0), "step"),
        (lambda x: losses.bradley_terry_loss(x, x[:2]), "rejected_rewards"),
        (lambda x: losses.dpo_loss(x, x, x[:1], x), "ref_chosen_logps"),
        (lambda x: losses.robust_loss(x, "tv", 0.1, groups=torch.zeros(2, dtype=torch.long)), "groups"),
        (lambda x: losses.robust_loss(x.reshape(1, -1)), "per_example"),
        (lambda x: losses.robust_loss(x, "hellinger", 0.1), "divergence"),
        (lambda x: losses.group_robust_loss(x, torch.tensor([0, 1, 5]), torch.ones(2) / 2), "groups"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call(torch.tensor([0.1, 0.2, 0.3]))
