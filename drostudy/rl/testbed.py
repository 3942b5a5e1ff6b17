"""The RL stage where it can be solved: a contextual bandit over real prompts with a log-linear policy.

Each prompt x has K candidate responses (padded; `mask` marks the real ones) with features phi(x, y) (d,),
a reference policy pi_ref(y|x), a learned reward r(x, y) and a reference-graded correctness c(x, y). The
policy is pi_theta(y|x) ∝ pi_ref(y|x) exp(theta . phi(x, y)) and the value of a prompt is exact over its
candidates (no sampling needed to evaluate it):

    V(x) = E_{y~pi}[r(x, y)] - beta KL(pi(.|x) || pi_ref(.|x)).

The robust objective (methods.md; Mandal, Sasnauskas and Radanovic, 2025) is max_theta min_{Q in ball}
E_{x~Q} V(x), the ball around the uniform distribution over the training prompts; its worst case is
w* = worst_case_weights(-V, divergence, radius) (low value = high weight) and its gradient sum_x w*_x grad V(x)
(Danskin; w* detached). Two algorithms, both from theta = 0 (pi = pi_ref):

- `run_minibatch`: the PPO-style algorithm the stage runs on the LLM (drostudy.rl.trainer): per step
  sample `batch_size` prompts and `samples` responses each from pi, reward minus beta times the sampled
  log-ratio, a leave-one-out baseline, advantages scaled by P * w*_p with w* from the batch's sampled
  per-prompt values, and `ppo_epochs` Adam steps on the clipped surrogate. Radius 0 leaves the advantages
  untouched, so it *is* the plain algorithm (same draws, same trajectory).
- `solve_full`: the full-batch exact objective by gradient ascent (Adam, Danskin gradient), the reference
  optimum. V is not concave in theta in general (the KL term is a reverse KL), so this is a local optimum
  from theta = 0; the minibatch algorithm starts there too.

Everything is float64 torch over (P, K, d) tensors and seeded; evaluation is exact per domain. The
experiments on it (paired seeds, convergence, training curves) are in drostudy.rl.testbed_experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import pandas as pd
import torch
from torch import Tensor

from drostudy.weights import ball_is_point, validate_radius, worst_case_weights


class Bandit(NamedTuple):
    """A candidate set per prompt; P prompts, K candidates (padded), d features; float64 unless said.

    phi (P, K, d): policy features; log_ref (P, K): log pi_ref, normalised over the real candidates (-inf on
    padding); reward (P, K): learned reward; correct (P, K): reference-graded correctness in {0, 1};
    mask (P, K) bool: real candidates; domain (P,) int64: index into `domains`; domains: their names.
    """

    phi: Tensor
    log_ref: Tensor
    reward: Tensor
    correct: Tensor
    mask: Tensor
    domain: Tensor
    domains: tuple[str, ...]

    def subset(self, index: Tensor) -> Bandit:
        """The prompts `index` (a (P',) long tensor), in that order."""
        return self._replace(**{f: getattr(self, f)[index] for f in self._fields[:-1]})


@dataclass(frozen=True)
class BanditConfig:
    beta: float = 0.1
    """KL coefficient: V(x) = E_pi r - beta KL(pi || pi_ref)"""
    divergence: str = "tv"
    """ball over prompt distributions: tv, kl, chi2 or cvar (drostudy.weights)"""
    radius: float = 0.0
    """ball size (cvar: tail fraction alpha, 1 = ordinary); 0 = plain (DRO off)"""
    steps: int = 200
    """minibatch steps (one batch of sampled responses each)"""
    batch_size: int = 32
    """prompts per minibatch: the worst case is taken over these"""
    samples: int = 4
    """sampled responses per prompt (>= 2: the leave-one-out baseline needs another sample)"""
    ppo_epochs: int = 2
    """Adam steps on the clipped surrogate per batch (1: the ratio is 1 and clipping never acts)"""
    clip: float = 0.2
    """PPO clip range epsilon: the ratio is clipped to [1 - clip, 1 + clip]"""
    learning_rate: float = 0.1
    """Adam learning rate of theta at step 1 of the minibatch algorithm; step t uses learning_rate / sqrt(t)"""
    full_steps: int = 1000
    """gradient-ascent steps of the full-batch exact solver"""
    full_learning_rate: float = 0.05
    """Adam learning rate of the full-batch solver (decays linearly to 0, so it settles)"""
    seed: int = 0
    """seed of the batch order and the sampled responses"""

    def __post_init__(self):
        validate_radius(self.divergence, self.radius)
        for name in ("beta", "clip", "learning_rate", "full_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)!r}")
        lowest = {"steps": 1, "batch_size": 1, "samples": 2, "ppo_epochs": 1, "full_steps": 1}
        for name, low in lowest.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


# --- exact quantities ----------------------------------------------------------------------------------


def policy_logp(theta: Tensor, bandit: Bandit) -> Tensor:
    """log pi_theta(y|x) (P, K): log_softmax over the real candidates of log_ref + theta . phi."""
    logits = bandit.log_ref + bandit.phi @ theta  # (P, K, d) @ (d,) -> (P, K)
    return torch.log_softmax(logits.masked_fill(~bandit.mask, -math.inf), dim=-1)


def _expect(logp: Tensor, values: Tensor, mask: Tensor) -> Tensor:
    """E_{y~pi}[values] (P,) with padding contributing 0 (never 0 * inf)."""
    return (logp.exp() * values.masked_fill(~mask, 0.0)).sum(-1)


def kl_to_ref(logp: Tensor, bandit: Bandit) -> Tensor:
    """KL(pi(.|x) || pi_ref(.|x)) (P,) exact over the candidates."""
    return _expect(logp, logp - bandit.log_ref, bandit.mask)


def prompt_values(theta: Tensor, bandit: Bandit, beta: float) -> Tensor:
    """V(x) = E_pi r - beta KL(pi || pi_ref) (P,), differentiable in theta."""
    logp = policy_logp(theta, bandit)
    return _expect(logp, bandit.reward, bandit.mask) - beta * kl_to_ref(logp, bandit)


def robust_objective(theta: Tensor, bandit: Bandit, beta: float, divergence: str, radius: float):
    """(min_Q E_Q V, w*) over all prompts of `bandit`; the value carries the Danskin gradient."""
    values = prompt_values(theta, bandit, beta)
    weights = worst_case_weights(-values, divergence, radius)  # (P,), detached
    return (weights * values).sum(), weights


def evaluate_policy(theta: Tensor, bandit: Bandit) -> pd.DataFrame:
    """Per domain, exact means over its prompts: correct, reward, kl and the mass on the reference answer.

    Returns a DataFrame (domain, metric, value); `chosen` is E_pi[y is the suite's chosen response],
    assumed to be candidate 0 of every prompt.
    """
    with torch.no_grad():
        logp = policy_logp(theta, bandit)
        per_prompt = {
            "correct": _expect(logp, bandit.correct, bandit.mask),
            "reward": _expect(logp, bandit.reward, bandit.mask),
            "kl": kl_to_ref(logp, bandit),
            "chosen": logp[:, 0].exp(),
        }
    rows = []
    for index, name in enumerate(bandit.domains):
        member = bandit.domain == index
        if member.any():
            rows += [
                {"domain": name, "metric": m, "value": float(v[member].mean())}
                for m, v in per_prompt.items()
            ]
    return pd.DataFrame(rows, columns=["domain", "metric", "value"])


# --- the minibatch PPO-style algorithm -----------------------------------------------------------------


def _advantages(theta: Tensor, batch: Bandit, config: BanditConfig, generator) -> tuple:
    """Sampled responses (B, k), their log pi_old (B, k) and (robust) leave-one-out advantages (B, k)."""
    with torch.no_grad():
        logp = policy_logp(theta, batch)  # (B, K)
        # drawn on the CPU by the CPU generator (the same draws on every device), then moved to the bandit's
        ys = torch.multinomial(logp.exp().cpu(), config.samples, replacement=True, generator=generator)
        ys = ys.to(logp.device)
        old = logp.gather(1, ys)  # (B, k)
        total = batch.reward.gather(1, ys) - config.beta * (old - batch.log_ref.gather(1, ys))
        baseline = (total.sum(1, keepdim=True) - total) / (config.samples - 1)  # mean of the others
        advantages = total - baseline
        # As drostudy.rl.trainer.advantage_scale (not imported: that module loads TRL, which would
        # triple this module's import time): P * w*, w* the worst case of the losses -v over the batch.
        if not ball_is_point(config.divergence, config.radius):  # else untouched: plain
            weights = worst_case_weights(-total.mean(1), config.divergence, config.radius)  # (B,)
            advantages = advantages * (len(weights) * weights)[:, None]
    return ys, old, advantages


def _surrogate_step(theta, optimizer, batch: Bandit, ys, old, advantages, clip: float) -> None:
    """One Adam step on the clipped surrogate -mean(min(ratio A, clip(ratio) A))."""
    ratio = torch.exp(policy_logp(theta, batch).gather(1, ys) - old)  # (B, k)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    optimizer.zero_grad(set_to_none=True)
    (-surrogate.mean()).backward()
    optimizer.step()


def run_minibatch(
    bandit: Bandit,
    config: BanditConfig,
    eval_steps: tuple[int, ...] = (),
    objective: tuple[str, float] | None = None,
    advantages=None,
) -> tuple[Tensor, list[dict]]:
    """The minibatch algorithm from theta = 0 on the prompts of `bandit`; returns (theta (d,), history).

    `advantages(theta, batch, config, generator) -> (ys, old_logp, advantages)` draws a batch's responses
    and weighs them (default: the ball over the batch's prompts); another function changes what the ball
    is over and nothing else (drostudy.capacity.testbed's ball over the batch's domains).

    History: one row per step in `eval_steps`: {"step", "theta"} and, with `objective` = (divergence,
    radius), "objective": the full-batch robust objective at theta_t (over every prompt of `bandit`).
    The batch order and the draws depend only on config.seed, never on the radius: paired runs share them.
    theta lives on the bandit's device; the batch order and the draws come from a seeded CPU generator on
    every device (so a bandit on a GPU sees the CPU run's batches and, up to rounding of pi, its draws).
    """
    n_prompts, batch_size = len(bandit.mask), min(config.batch_size, len(bandit.mask))
    device, advantages = bandit.phi.device, advantages or _advantages
    theta = bandit.phi.new_zeros(bandit.phi.shape[-1], requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=config.learning_rate)
    # learning_rate / sqrt(t), the step sizes of the convergence guarantee; a constant rate keeps the iterate bouncing
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: (1 + t // config.ppo_epochs) ** -0.5)
    generator = torch.Generator().manual_seed(config.seed)
    history, wanted = [], set(eval_steps)
    for step in range(1, config.steps + 1):
        batch = bandit.subset(torch.randperm(n_prompts, generator=generator)[:batch_size].to(device))
        ys, old, weighted = advantages(theta.detach(), batch, config, generator)
        for _ in range(config.ppo_epochs):
            _surrogate_step(theta, optimizer, batch, ys, old, weighted, config.clip)
            decay.step()
        if step in wanted:
            row = {"step": step, "theta": theta.detach().clone()}
            if objective is not None:
                with torch.no_grad():
                    row["objective"] = float(robust_objective(theta, bandit, config.beta, *objective)[0])
            history.append(row)
    return theta.detach(), history


# --- the full-batch exact optimiser --------------------------------------------------------------------


def solve_full(bandit: Bandit, config: BanditConfig) -> tuple[Tensor, float]:
    """argmax_theta min_Q E_Q V over every prompt of `bandit` (Adam, Danskin gradient, linear lr decay).

    Returns the best iterate seen and its exact robust objective (a local optimum from theta = 0); theta
    lives on the bandit's device.
    """
    theta = bandit.phi.new_zeros(bandit.phi.shape[-1], requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=config.full_learning_rate)
    decay = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / config.full_steps)
    best, best_theta = -math.inf, None
    for step in range(config.full_steps + 1):
        value, _ = robust_objective(theta, bandit, config.beta, config.divergence, config.radius)
        if float(value.detach()) > best:
            best, best_theta = float(value.detach()), theta.detach().clone()
        if step == config.full_steps:
            break
        optimizer.zero_grad(set_to_none=True)
        (-value).backward()
        optimizer.step()
        decay.step()
    return best_theta, best
