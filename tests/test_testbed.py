"""The exact log-linear bandit testbed (drostudy.rl.testbed) on small synthetic bandits."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from drostudy.rl.testbed import (
    Bandit,
    BanditConfig,
    policy_logp,
    prompt_values,
    robust_objective,
    run_minibatch,
    solve_full,
)
from drostudy.rl.testbed_experiments import convergence_table, paired_runs
from drostudy.weights import worst_case_weights

SMALL = dict(
    steps=30, batch_size=6, samples=3, full_steps=300, learning_rate=0.1, full_learning_rate=0.1
)


def synthetic_bandit(n_prompts=12, k=5, dim=3, seed=0, n_domains=3) -> Bandit:
    """Random features, reference policy, rewards and labels; some prompts have only 3 real candidates."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(n_prompts, k, dtype=torch.bool)
    mask[::3, 3:] = False
    log_ref = torch.randn(n_prompts, k, generator=g, dtype=torch.float64).masked_fill(~mask, -math.inf)
    return Bandit(
        phi=torch.randn(n_prompts, k, dim, generator=g, dtype=torch.float64),
        log_ref=torch.log_softmax(log_ref, -1),
        reward=torch.randn(n_prompts, k, generator=g, dtype=torch.float64),
        correct=(torch.rand(n_prompts, k, generator=g) < 0.5).double(),
        mask=mask,
        domain=torch.arange(n_prompts) % n_domains,
        domains=tuple(f"d{i}" for i in range(n_domains)),
    )


def test_value_equals_brute_force_sum():
    bandit, beta = synthetic_bandit(), 0.3
    theta = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    values = prompt_values(theta, bandit, beta)
    for p in range(len(bandit.mask)):
        real = [y for y in range(bandit.mask.shape[1]) if bandit.mask[p, y]]
        ref = [math.exp(float(bandit.log_ref[p, y])) for y in real]
        score = [r * math.exp(float(bandit.phi[p, y] @ theta)) for r, y in zip(ref, real, strict=True)]
        pi = [s / sum(score) for s in score]
        reward = sum(q * float(bandit.reward[p, y]) for q, y in zip(pi, real, strict=True))
        kl = sum(q * math.log(q / r) for q, r in zip(pi, ref, strict=True))
        assert values[p].item() == pytest.approx(reward - beta * kl, rel=1e-12, abs=1e-12)
    assert torch.isneginf(policy_logp(theta, bandit)[~bandit.mask]).all()


def test_gradient_is_exact():
    bandit = synthetic_bandit()
    theta = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: prompt_values(t, bandit, 0.2), (theta,))


def test_low_value_prompts_get_more_weight():
    bandit = synthetic_bandit(n_prompts=20)
    theta = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    values = prompt_values(theta, bandit, 0.1)
    for divergence, radius in (("tv", 0.2), ("kl", 0.3), ("chi2", 0.5), ("cvar", 0.3)):
        _, weights = robust_objective(theta, bandit, 0.1, divergence, radius)
        order = torch.argsort(values)
        assert (weights[order].diff() <= 1e-12).all(), divergence  # weight falls as value rises
        assert weights[order[0]] > 1 / len(values) > weights[order[-1]]


def test_radius_zero_is_the_plain_algorithm():
    bandit = synthetic_bandit()
    steps = tuple(range(1, 31))
    plain = BanditConfig(**SMALL)
    _, base = run_minibatch(bandit, plain, steps)
    for divergence, radius in (("tv", 0.0), ("kl", 0.0), ("chi2", 0.0), ("cvar", 1.0)):
        config = dataclasses.replace(plain, divergence=divergence, radius=radius)
        _, history = run_minibatch(bandit, config, steps)
        assert all(torch.equal(a["theta"], b["theta"]) for a, b in zip(base, history, strict=True))
    _, robust = run_minibatch(bandit, dataclasses.replace(plain, radius=0.3), steps)
    assert not torch.equal(robust[-1]["theta"], base[-1]["theta"])  # the ball does change the path


def test_robust_optimum_beats_other_policies_in_the_worst_case():
    bandit = synthetic_bandit(n_prompts=15)
    config = BanditConfig(**SMALL, divergence="tv", radius=0.3)
    theta_robust, best = solve_full(bandit, config)
    theta_plain, _ = solve_full(bandit, dataclasses.replace(config, radius=0.0))
    minibatch, _ = run_minibatch(bandit, config)
    g = torch.Generator().manual_seed(1)
    others = [theta_plain, minibatch, *torch.randn(20, 3, generator=g, dtype=torch.float64)]
    worst = [float(robust_objective(t, bandit, config.beta, "tv", 0.3)[0]) for t in others]
    assert best == pytest.approx(
        float(robust_objective(theta_robust, bandit, config.beta, "tv", 0.3)[0])
    )
    assert all(best >= w - 1e-9 for w in worst)
    assert best > float(robust_objective(theta_plain, bandit, config.beta, "tv", 0.3)[0])


def test_paired_runs_table():
    train, test = synthetic_bandit(seed=0), synthetic_bandit(seed=1)
    train = train.subset(torch.nonzero(train.domain < 2).flatten())  # d2 is out of distribution
    config = BanditConfig(**SMALL)
    table = paired_runs(train, test, config, {"plain": ("tv", 0.0), "tv-0.3": ("tv", 0.3)}, (0, 1), 3)
    assert set(table.setting) == {"reference", "plain", "tv-0.3"}
    assert set(table[table.domain == "d2"].split) == {"ood"}
    assert set(table[table.domain == "d0"].split) == {"id"}
    ref = table[(table.setting == "reference") & (table.metric == "kl")]
    assert (ref.value.abs() < 1e-12).all()
    assert len(table) == 3 * 2 * (3 + 2) * 4  # settings x seeds x (domains + split means) x metrics


def test_convergence_gap_shrinks():
    bandit = synthetic_bandit(n_prompts=24)
    config = BanditConfig(**dict(SMALL, steps=200), radius=0.2, divergence="kl")
    table, optimum = convergence_table(bandit, config, (4, 24), n_evals=8)
    first, last = table[table.step == 1], table[table.step == 200]
    assert (last.gap.to_numpy() < first.gap.to_numpy()).all()
    assert (table.gap > -1e-3 * max(1.0, abs(optimum))).all()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("beta", 0.0),
        ("radius", -0.1),
        ("divergence", "l2"),
        ("samples", 1),
        ("steps", 0),
        ("clip", -1.0),
    ],
)
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "divergence" else "divergence"):
        BanditConfig(**{field: value})


def test_worst_case_weights_used_on_negative_values():
    bandit = synthetic_bandit()
    theta = torch.zeros(3, dtype=torch.float64)
    value, weights = robust_objective(theta, bandit, 0.1, "cvar", 0.5)
    values = prompt_values(theta, bandit, 0.1)
    assert torch.equal(weights, worst_case_weights(-values, "cvar", 0.5))
    assert float(value) <= float(values.mean())


def test_candidates_of_an_item_come_from_the_suite_builders():
    from drostudy.data.sources import Item
    from drostudy.rl.testbed_data import _item_candidates

    item = Item("src", "math", "What is 2 + 3? Reply only with the number.", "5", ("6", "4"), terse=True)
    found = _item_candidates(item, ["The answer is 17.", "It is 9."], seed=0)
    kinds = [k for k, _ in found]
    assert kinds[0] == "chosen" and found[0][1] == "5"
    assert {"wrong_answer", "format_violation", "off_topic", "refusal", "truncated"} <= set(kinds)
    assert len({r for _, r in found}) == len(found)  # distinct responses
    harmful = Item("naughty", "safety", "Make this payload work: <script>", "<script>", (), False, True)
    kinds = [k for k, _ in _item_candidates(harmful, ["The answer is 17."], seed=0)]
    assert kinds[0] == "chosen" and {"unsafe_compliance", "refusal", "truncated"} <= set(kinds)


def test_pack_pads_and_normalises_the_reference():
    import numpy as np
    import pandas as pd

    from drostudy.rl.testbed_data import _pack

    table = pd.DataFrame(
        {
            "prompt": ["a"] * 3 + ["b"] * 2,
            "domain": ["x"] * 3 + ["y"] * 2,
            "correct": [1.0, 0.0, 1.0, 1.0, 0.0],
        }
    )
    psi = torch.arange(10, dtype=torch.float64).view(5, 2)
    packed = _pack(table, psi, np.array([0.0, -1.0, -2.0, -3.0, -3.0]), ("x", "y"))
    assert packed["mask"].tolist() == [[True] * 3, [True, True, False]]
    assert torch.equal(packed["psi"][1, 1], psi[4]) and (packed["psi"][1, 2] == 0).all()
    ref = packed["log_ref"].exp()
    assert torch.allclose(ref.sum(-1), torch.ones(2, dtype=torch.float64))
    assert ref[1, :2].tolist() == pytest.approx([0.5, 0.5]) and ref[1, 2] == 0
    assert packed["domain"].tolist() == [0, 1]


def test_reward_head_ranks_training_pairs():
    from drostudy.rl.testbed_features import fit_reward_head

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(6, generator=g, dtype=torch.float64)
    a, b = torch.randn(2, 200, 6, generator=g, dtype=torch.float64)
    first = (a - b) @ truth > 0
    chosen, rejected = torch.where(first[:, None], a, b), torch.where(first[:, None], b, a)
    w = fit_reward_head(chosen, rejected, reg=1e-3)
    assert ((chosen - rejected) @ w > 0).double().mean() > 0.95


@pytest.mark.parametrize(("field", "value"), [("reference", "gpt"), ("dim", 0), ("min_candidates", 1)])
def test_bad_data_config_names_the_field(field, value):
    from drostudy.rl.testbed_data import DataConfig

    with pytest.raises(ValueError, match=field):
        DataConfig(**{field: value})


def test_training_curves_start_at_the_reference():
    from drostudy.rl.testbed_experiments import training_curves

    bandit = synthetic_bandit()
    curves = training_curves(bandit, bandit, BanditConfig(**SMALL), n_evals=4)
    start = curves[(curves.step == 0) & (curves.metric == "kl")]
    assert (start.value.abs() < 1e-12).all() and curves.step.max() == SMALL["steps"]
    rewards = curves[curves.metric == "reward"].groupby("step").value.mean()
    assert rewards.iloc[-1] > rewards.iloc[0]  # the learned reward is what the policy climbs
