"""Build the suite: per domain, split real prompts into train/test, then fill each split kind by kind.

Splitting happens on prompts before any pair is made, so no prompt (and no pair) is shared between splits.
Each prompt carries at most `pairs_per_prompt` pairs, each of a different kind. The kind mix differs by
domain on purpose: domains then differ in difficulty and in what they reward (a refusal is rejected in
math but chosen for a harmful request), which is the distribution shift the study is about.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np

from drostudy.data.responses import KINDS, chosen_response
from drostudy.data.sources import Item, read_domain

log = logging.getLogger(__name__)

DOMAINS: tuple[str, ...] = ("math", "code", "reasoning", "knowledge", "safety")
COLUMNS = ("id", "prompt", "chosen", "rejected", "domain", "kind", "source")
# Share of each kind of rejected response, per domain (see the dataset card for why these differ).
KIND_MIX: dict[str, dict[str, float]] = {
    "math": {"wrong_answer": 0.40, "format_violation": 0.30, "truncated": 0.20, "off_topic": 0.10},
    "code": {"wrong_answer": 0.35, "format_violation": 0.25, "off_topic": 0.25, "refusal": 0.15},
    "reasoning": {"wrong_answer": 0.45, "truncated": 0.20, "off_topic": 0.20, "refusal": 0.15},
    "knowledge": {"wrong_answer": 0.40, "off_topic": 0.25, "refusal": 0.25, "truncated": 0.10},
    "safety": {"unsafe_compliance": 0.40, "wrong_answer": 0.30, "refusal": 0.20, "off_topic": 0.10},
}
# Kinds few items can carry go first, so the common kinds do not use those items up.
_FILL_ORDER = (
    "unsafe_compliance",
    "format_violation",
    "wrong_answer",
    "off_topic",
    "truncated",
    "refusal",
)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    """Seed of every random choice (item sampling, split, kinds, templates): same seed, same suite."""
    per_domain: int = 850
    """Pairs per domain, train and test together."""
    test_per_domain: int = 340
    """Of those, pairs per domain in the test split (the study evaluates on >= 300 per domain)."""
    pairs_per_prompt: int = 2
    """At most this many pairs (each of a different kind) share one prompt."""
    max_prompt_chars: int = 900
    """Longer prompts are skipped: the reward model sees prompt and response within 128 tokens."""
    domains: tuple[str, ...] = DOMAINS
    """Domains to build (a subset of the default ones)."""

    def __post_init__(self):
        unknown = [d for d in self.domains if d not in DOMAINS]
        if unknown:
            raise ValueError(f"unknown domain {unknown[0]!r}; expected one of {list(DOMAINS)}")
        if not 0 < self.test_per_domain < self.per_domain:
            raise ValueError(f"test_per_domain must be in (0, per_domain={self.per_domain})")
        if self.pairs_per_prompt < 1:
            raise ValueError("pairs_per_prompt must be >= 1")

    def params(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _allocate(total: int, mix: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `total` in the proportions of `mix` (largest remainder)."""
    raw = {k: total * p / sum(mix.values()) for k, p in mix.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: counts[k] - raw[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _pair_id(item: Item, kind: str) -> str:
    digest = hashlib.sha1(item.prompt.encode()).hexdigest()[:10]
    return f"{item.domain}/{item.source}/{digest}/{kind}"


def fill_split(items: list[Item], n_pairs: int, mix: dict[str, float], k: int, rng) -> list[dict]:
    """Up to `n_pairs` pairs from `items`, kinds in the proportions of `mix`, <= k pairs per item."""
    others: dict[str, list[str]] = {}
    # sorted: a set of strings iterates in PYTHONHASHSEED's order, and every chosen_response below draws from
    # rng, so an unsorted loop gave each process its own suite (5% of rejected responses differed)
    for src in sorted({it.source for it in items}):
        others[src] = [chosen_response(it, rng) for it in items if it.source != src and not it.harmful]
    uses: Counter = Counter()
    done: set[tuple[int, str]] = set()
    rows: list[dict] = []

    def take(kind: str, want: int) -> int:
        got = 0
        for i in rng.permutation(len(items)):
            if got >= want:
                break
            if uses[i] >= k or (i, kind) in done:
                continue
            pair = KINDS[kind](items[i], rng, others[items[i].source])
            if pair is None or pair[0] == pair[1]:
                continue
            uses[i] += 1
            done.add((i, kind))
            rows.append(_row(items[i], kind, *pair))
            got += 1
        return got

    targets = _allocate(n_pairs, mix)
    short = 0
    for kind in [k_ for k_ in _FILL_ORDER if k_ in targets]:
        short += targets[kind] - take(kind, targets[kind])
    for kind in sorted(mix, key=mix.get, reverse=True):  # a shortfall goes to the kinds that still fit
        if short > 0:
            short -= take(kind, short)
    if short > 0:
        log.warning("only %d of %d pairs could be made (too few prompts)", n_pairs - short, n_pairs)
    return rows


def _row(item: Item, kind: str, chosen: str, rejected: str) -> dict:
    return {
        "id": _pair_id(item, kind),
        "prompt": item.prompt,
        "chosen": chosen,
        "rejected": rejected,
        "domain": item.domain,
        "kind": kind,
        "source": item.source,
    }


def _split_items(items: list[Item], test_share: float, rng) -> tuple[list[Item], list[Item]]:
    """(test, train) items, split before any pair exists: no prompt, and no harmful payload, in both."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.answer if item.harmful else item.prompt, []).append(item)
    keys = list(groups)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    cut = int(round(len(keys) * test_share))
    test = [it for key in keys[:cut] for it in groups[key]]
    train = [it for key in keys[cut:] for it in groups[key]]
    return test, train


def build_rows(config: BuildConfig) -> dict[str, list[dict]]:
    """{"train": rows, "test": rows} of the suite described by `config` (deterministic in its seed)."""
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    n_test = config.test_per_domain
    n_train = config.per_domain - n_test
    for domain in config.domains:
        rng = np.random.default_rng([config.seed, zlib.crc32(domain.encode())])
        items = read_domain(domain, rng, config.max_prompt_chars)
        test_items, train_items = _split_items(items, config.test_per_domain / config.per_domain, rng)
        mix = KIND_MIX[domain]
        splits["test"] += fill_split(test_items, n_test, mix, config.pairs_per_prompt, rng)
        splits["train"] += fill_split(train_items, n_train, mix, config.pairs_per_prompt, rng)
    for name, rows in splits.items():  # interleave domains, so that the first n rows are a fair sample
        order = np.random.default_rng([config.seed, zlib.crc32(name.encode())]).permutation(len(rows))
        splits[name] = [rows[i] for i in order]
    return splits
