"""The convergence demo: the cvxpy robust optimum is right, minibatch DRO approaches it, shifts stay in the ball."""

import cvxpy as cp
import numpy as np
import pytest
import torch

from drostudy.toy import convergence as C
from drostudy.toy import domain_shift as S
from drostudy.toy import exact as E
from drostudy.toy import preferences as P
from drostudy.weights import robust_value, worst_case_weights

CASES = [("tv", 0.2), ("cvar", 0.3), ("chi2", 0.5), ("kl", 0.3)]


@pytest.fixture(scope="module")
def domains():
    return P.make_domains(seed=0)


@pytest.fixture(scope="module")
def small(domains):
    return P.sample_preferences(domains, 256, seed=0)


@pytest.mark.parametrize("divergence,radius", CASES + [("tv", 0.0), ("cvar", 1.0), ("tv", 1.0)])
@pytest.mark.parametrize("uniform", [True, False])
def test_dual_forms_equal_the_exact_worst_case(divergence, radius, uniform):
    """The dual expressions cvxpy minimises give the value of drostudy.weights' exact worst case."""
    rng = np.random.default_rng(1)
    losses = rng.lognormal(size=40)
    prior = np.full(40, 1 / 40) if uniform else rng.dirichlet(np.ones(40))
    expression, constraints = E.robust_dual(cp.Constant(losses), divergence, radius, prior)
    problem = cp.Problem(cp.Minimize(expression), constraints)
    problem.solve(solver=cp.CLARABEL)
    weights = worst_case_weights(
        torch.from_numpy(losses), divergence, radius, prior=torch.from_numpy(prior)
    )
    exact = float(weights @ torch.from_numpy(losses))
    assert problem.value == pytest.approx(exact, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("level", ["example", "group"])
@pytest.mark.parametrize("divergence,radius", CASES)
def test_cvxpy_optimum_matches_full_batch_subgradient_descent(small, divergence, radius, level):
    """Brute force: full-batch gradient steps with the exact weights reach the solver's value, not below."""
    theta_star, optimum = E.solve_full_robust(small, divergence, radius, level=level)
    history = C.minibatch_robust_gd(
        small, divergence, radius, batch_size=len(small.z), steps=1500, lr=0.5, level=level
    )
    best = min(min(row["objective"], row["avg_objective"]) for row in history)
    assert best >= optimum - 1e-6  # nothing beats the optimum
    assert best <= optimum + 2e-3  # and plain descent gets there
    # the solver's theta is a local minimum of the exact objective, too
    rng = np.random.default_rng(0)
    for direction in rng.standard_normal((5, len(theta_star))):
        moved = theta_star + 1e-2 * direction / np.linalg.norm(direction)
        assert (
            P.robust_objective(moved, small, divergence, radius, P.DEFAULT_L2, level) >= optimum - 1e-7
        )


def test_minibatch_gap_shrinks_with_iterations_and_batch_size(domains):
    data = P.sample_preferences(domains, 1024, seed=0)
    table, optimum = C.gap_curves(data, "tv", 0.2, batch_sizes=(16, 512), steps=800, lr=0.5)
    assert (table["gap"] >= -1e-6).all()  # F* is the minimum of F
    start, end = table[table.step == table.step.min()], table[table.step == table.step.max()]
    end_gap = dict(zip(end.batch_size, end.avg_gap, strict=True))
    start_gap = dict(zip(start.batch_size, start.gap, strict=True))
    for batch_size in (16, 512):
        assert end_gap[batch_size] < 0.5 * start_gap[batch_size]
    # the small batch's estimator is biased: its floor stays well above the large batch's
    assert end_gap[512] < 0.25 * end_gap[16]
    assert end_gap[512] < 0.02 * abs(optimum)


def test_domain_shift_lies_in_the_ball_and_the_group_ball_beats_ordinary(domains):
    data = P.sample_preferences(domains, 768, seed=0)
    result = S.domain_shift_check(data, domains, "chi2", 0.2)
    nominal, shifted = np.array(result["nominal_mix"]), np.array(result["shifted_mix"])
    assert S.in_ball(shifted, nominal, "chi2", 0.2)
    assert not np.allclose(shifted, nominal)  # a real shift
    # spread uniformly within domains, the shift is inside the pair-level ball too: no loss vector
    # gets more from it than from the exact worst case
    counts = np.bincount(data.domain.numpy())
    q = torch.from_numpy(shifted[data.domain.numpy()] / counts[data.domain.numpy()])
    for seed in range(5):
        losses = torch.from_numpy(np.random.default_rng(seed).lognormal(size=len(q)))
        assert float(q @ losses) <= float(robust_value(losses, "chi2", 0.2)) + 1e-9
    shifted_loss, worst = result["shifted_loss"], result["worst_domain_loss"]
    assert shifted_loss["group"] < shifted_loss["ordinary"]
    assert worst["group"] < worst["ordinary"]
    assert worst["robust"] < worst["ordinary"]  # chi2 over pairs also helps the worst domain (this seed)


@pytest.mark.parametrize("divergence", ["tv", "kl", "chi2", "cvar"])
def test_mix_divergence_matches_pairwise_divergence(domains, divergence):
    """A domain-mix shift spread within domains has the pair-level divergence mix_divergence reports."""
    data = P.sample_preferences(domains, 300, seed=2)
    nominal, shifted = data.mix, np.array([0.2, 0.3, 0.5])
    index = data.domain.numpy()
    q = shifted[index] / np.bincount(index)[index]
    u = np.full(len(q), 1 / len(q))
    assert S.mix_divergence(q, u, divergence) == pytest.approx(
        S.mix_divergence(shifted, nominal, divergence)
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown divergence 'hellinger'"):
        S.mix_divergence(np.ones(2) / 2, np.ones(2) / 2, "hellinger")
    with pytest.raises(ValueError, match="unknown level 'token'"):
        P.robust_objective(
            np.zeros(5), P.sample_preferences(P.make_domains(), 30), "tv", 0.1, 0.0, "token"
        )
    with pytest.raises(ValueError, match="mix must be"):
        P.sample_preferences(P.make_domains(), 30, mix=(0.5, 0.5))
