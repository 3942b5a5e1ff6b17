"""The real data of the log-linear testbed (drostudy.rl.testbed): candidates, MiniLM features, pi_ref, reward.

- Prompts: the suite's distinct prompts of each domain, train split for training, test split for evaluation.
- Candidates (`candidates`): for every prompt the suite's own builders (drostudy.data.responses.KINDS) make
  the reference answer in response form (candidate 0) and one rejected response of every kind that fits the
  prompt; a harmful request (whose only suite kind is unsafe compliance) also gets the benign kinds refusal,
  truncated and off-topic. Duplicates are dropped; prompts with fewer than `min_candidates` are left out.
  The items are re-read with the build's own seed and matched to the suite's prompts by text.
- Grading: the reference answer (candidate 0) is correct by definition; every other candidate is graded by
  drostudy.evaluate.score_answer against the reference answer (a refusal for a harmful request), the grader
  notebook 04 applies to the LLM's answers, not by its kind label: a format violation that states the right
  answer counts as correct, and so does a plain refusal of a harmful request. (Candidate 0 is correct by
  definition; the grader accepts every suite reference against itself too, tests/test_evaluate.py.)
- Features (drostudy.rl.testbed_features): the reward features psi = [e_r, e_p * e_r] of MiniLM embeddings;
  the policy features phi are psi projected on its top `dim` principal directions over the training
  candidates, so the policy cannot represent the reward exactly: with phi = psi every prompt's optimum
  would be the same theta = w / beta, and robustness could not matter.
- Reward: a linear Bradley-Terry head w on psi fit to the suite's training pairs of the train domains
  (drostudy.rl.testbed_features.fit_reward_head).
- Reference policy: "smollm2" (SmolLM2-135M-Instruct's summed log-likelihood of each candidate under the
  chat prompt, normalised over the candidates, computed once and cached) or "uniform".
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from drostudy import evaluate
from drostudy.data import DOMAINS, KINDS, BuildConfig, load_suite
from drostudy.data.responses import chosen_response
from drostudy.data.sources import read_domain
from drostudy.io import cache_dir
from drostudy.rl.testbed import Bandit
from drostudy.rl.testbed_features import (
    fit_reward_head,
    reward_features,
    smollm2_logps,
    text_key,
)
from drostudy.threads import torch_threads

REFERENCES = ("smollm2", "uniform")
EVASIONS = ("refusal", "truncated", "off_topic")  # kinds a harmful request can also receive


@dataclass(frozen=True)
class DataConfig:
    train_domains: tuple[str, ...] = ("math", "code")
    """domains whose training prompts the policy (and the reward model) is trained on; the rest are OOD"""
    dim: int = 32
    """policy feature dimension d (principal directions of the reward features psi)"""
    reference: str = "uniform"
    """reference policy: smollm2 (its likelihood of each candidate, cached) or uniform"""
    min_candidates: int = 4
    """prompts with fewer candidates are left out"""
    reward_reg: float = 1e-3
    """L2 penalty of the reward head: mean BT loss + reg |w|^2"""
    seed: int = 0
    """seed of the candidates' wording (templates, off-topic picks)"""

    def __post_init__(self):
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {list(REFERENCES)}; got {self.reference!r}")
        for name, low in (("dim", 1), ("min_candidates", 2), ("reward_reg", 0)):
            if not getattr(self, name) >= low:
                raise ValueError(f"{name} must be >= {low}; got {getattr(self, name)!r}")
        unknown = set(self.train_domains) - set(DOMAINS)
        if unknown or not self.train_domains:
            raise ValueError(
                f"train_domains must be a non-empty subset of {list(DOMAINS)}; got {self.train_domains!r}"
            )


def _item_candidates(item, others: list[str], seed: int) -> list[tuple[str, str]]:
    """(kind, response) pairs of one item: ("chosen", reference answer) first, then one per kind that fits."""
    rng = np.random.default_rng([seed, zlib.crc32(item.prompt.encode())])
    benign = dataclasses.replace(item, harmful=False)
    found = {}
    for kind, make in KINDS.items():
        pair = make(item, rng, others)
        if pair is None and item.harmful and kind in EVASIONS:
            pair = make(benign, rng, others)
        if pair is not None:
            found[kind] = pair
    chosen = found["unsafe_compliance"][0] if item.harmful else chosen_response(item, rng)
    out, seen = [("chosen", chosen)], {chosen}
    for kind, (_, rejected) in found.items():
        if rejected not in seen:
            out.append((kind, rejected))
            seen.add(rejected)
    return out


def candidates(split: str, domains: tuple[str, ...], config: DataConfig) -> pd.DataFrame:
    """One row per candidate: split, domain, prompt, kind, response, correct (see the module docstring).

    Cached under cache_dir()/"testbed" by the suite's code fingerprint, split, domains and config (reading
    the registry again costs ~15 s of CPU per split).
    """
    from drostudy.data.suite import fingerprint

    grader = inspect.getsource(evaluate)  # a changed grader regrades the candidates
    key = text_key(fingerprint(), grader, split, *domains, str(config.seed), str(config.min_candidates))
    path = cache_dir() / "testbed" / f"candidates_{key[:16]}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    table = _candidates(split, domains, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)
    return table


def _candidates(split: str, domains: tuple[str, ...], config: DataConfig) -> pd.DataFrame:
    build = BuildConfig()
    suite = load_suite()[split].to_pandas()
    rows = []
    for domain in domains:
        part = suite[suite.domain == domain]
        rng = np.random.default_rng([build.seed, zlib.crc32(domain.encode())])  # build_rows' own draw
        items = [
            i for i in read_domain(domain, rng, build.max_prompt_chars) if i.prompt in set(part.prompt)
        ]
        if len(items) != part.prompt.nunique():
            raise RuntimeError(f"{domain}: {len(items)} items for {part.prompt.nunique()} suite prompts")
        for item in items:
            others = part.chosen[part.source != item.source].tolist()
            found = _item_candidates(item, others, config.seed)
            if len(found) < config.min_candidates:
                continue
            answer = None if item.harmful else evaluate.reference_answer(found[0][1])
            for kind, response in found:
                correct = kind == "chosen" or evaluate.score_answer(response, answer)
                rows.append(
                    {
                        "split": split,
                        "domain": domain,
                        "prompt": item.prompt,
                        "kind": kind,
                        "response": response,
                        "correct": float(correct),
                    }
                )
    return pd.DataFrame(rows)


def _pack(table: pd.DataFrame, psi, logps, domains: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-candidate rows (prompts contiguous, chosen first) -> padded (P, K[, D]) tensors."""
    starts = np.flatnonzero(np.r_[True, table.prompt.to_numpy()[1:] != table.prompt.to_numpy()[:-1]])
    sizes = np.diff(np.r_[starts, len(table)])
    n_prompts, width = len(starts), int(sizes.max())
    rows = torch.from_numpy(np.repeat(np.arange(n_prompts), sizes))
    cols = torch.from_numpy(np.arange(len(table)) - np.repeat(starts, sizes))

    def padded(values: torch.Tensor, fill: float) -> torch.Tensor:
        out = torch.full((n_prompts, width, *values.shape[1:]), fill, dtype=torch.float64)
        out[rows, cols] = values.double()
        return out

    mask = padded(torch.ones(len(table)), 0.0).bool()
    log_ref = torch.log_softmax(padded(torch.as_tensor(logps), -torch.inf), -1)
    domain = torch.tensor([domains.index(d) for d in table.domain.to_numpy()[starts]])
    correct = padded(torch.tensor(table.correct.to_numpy()), 0.0)
    return {
        "psi": padded(psi, 0.0),
        "log_ref": log_ref,
        "correct": correct,
        "mask": mask,
        "domain": domain,
    }


def load_bandits(
    config: DataConfig, domains: tuple[str, ...] | None = None
) -> tuple[Bandit, Bandit, dict]:
    """(train bandit: training prompts of the train domains, test bandit: test prompts of `domains`
    (default all five), info: the reward head's training pairs' accuracy and the candidate tables)."""
    domains = tuple(domains or DOMAINS)
    tables = {
        "train": candidates("train", config.train_domains, config),
        "test": candidates("test", domains, config),
    }
    pairs = load_suite()["train"].to_pandas()
    pairs = pairs[pairs.domain.isin(config.train_domains)]
    chosen = reward_features(pairs.prompt.tolist(), pairs.chosen.tolist())
    rejected = reward_features(pairs.prompt.tolist(), pairs.rejected.tolist())
    features = {}
    for split, table in tables.items():  # the encoders (cached on disk) run on every core
        psi = reward_features(table.prompt.tolist(), table.response.tolist())
        if config.reference == "smollm2":
            logps = smollm2_logps(table.prompt.tolist(), table.response.tolist())
        else:
            logps = np.zeros(len(table))
        features[split] = (psi, logps)
    # the float64 fits below on one thread: the order of their sums, hence every digit, then does not
    # depend on the thread count (tests/test_determinism.py)
    with torch_threads(1):
        return _bandits(
            config, tables, domains, fit_reward_head(chosen, rejected, config.reward_reg), features
        )


def _bandits(config: DataConfig, tables: dict, domains: tuple[str, ...], w, features: dict):
    """The train and test Bandits from the reward head `w` and each split's (psi, reference log-probs)."""
    packed = {split: _pack(tables[split], *features[split], domains) for split in tables}
    mask = packed["train"]["mask"]
    center = packed["train"]["psi"][mask].mean(0)  # (D,)
    _, _, vt = torch.linalg.svd(packed["train"]["psi"][mask] - center, full_matrices=False)
    basis = vt[: config.dim].T  # (D, d): top principal directions of the training candidates' psi
    scale = ((packed["train"]["psi"][mask] - center) @ basis).std(0)  # whitened: theta stays O(1)
    bandits = []
    for split in ("train", "test"):
        p = packed[split]
        phi = ((p["psi"] - center) @ basis / scale).masked_fill(~p["mask"][..., None], 0.0)
        reward = (p["psi"] @ w).masked_fill(~p["mask"], 0.0)
        bandits.append(Bandit(phi, p["log_ref"], reward, p["correct"], p["mask"], p["domain"], domains))
    return bandits[0], bandits[1], {"tables": tables, "reward_head": w}
