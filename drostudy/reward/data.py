"""Data for the reward-model runs: the train/test pairs of a config, their tokenisation, and the evaluation.

Both engines (TRL and cached) share these, so their runs see the same pairs and report the same metrics:
`per_domain[domain] = {"accuracy", "margin", "n"}` on the test split of EVERY suite domain (a fixed subset,
independent of the run's seed, so runs are compared on the same pairs) and `per_kind["domain/kind"]`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from trl.trainer.reward_trainer import DataCollatorForPreference

TEST_SEED = 0  # every run is evaluated on the same test pairs
# label flips draw from (seed, NOISE_STREAM): independent of the model's draws from seed
NOISE_STREAM = 13


def prepare_splits(config):
    """(train pairs of the config's mix and seed, test pairs of every domain) as datasets.Dataset."""
    from drostudy.data import load_suite

    suite = load_suite()
    return train_pairs(suite["train"], config), test_pairs(suite["test"], config.n_eval)


def train_pairs(train, config):
    """The training pairs of `config` (its domains, shares, kinds, n_train and seed) from suite split `train`."""
    from drostudy.data import select

    proportions = (
        dict(zip(config.train_domains, config.train_proportions, strict=True))
        if config.train_proportions
        else None
    )
    kinds = config.train_kinds or None
    pairs = select(train, config.train_domains, kinds, proportions, n=config.n_train, seed=config.seed)
    return flip_labels(pairs, getattr(config, "label_noise", 0.0), config.seed)


def flip_labels(pairs, fraction: float, seed: int):
    """`pairs` with chosen and rejected swapped on round(fraction * n) of them (column `flipped` marks them).

    The flipped pairs are the first ones of a permutation drawn from (seed, NOISE_STREAM): settings sharing a
    seed flip the same pairs, and a larger fraction flips a superset of a smaller one's (nested noise levels).
    """
    if not 0 <= fraction < 0.5:
        raise ValueError(f"label_noise must be a number in [0, 0.5); got {fraction!r}")
    n_flip = round(fraction * len(pairs))
    order = np.random.default_rng([seed, NOISE_STREAM]).permutation(len(pairs))
    flipped = np.zeros(len(pairs), dtype=bool)
    flipped[order[:n_flip]] = True
    if not n_flip:
        return pairs
    chosen, rejected = np.asarray(pairs["chosen"], object), np.asarray(pairs["rejected"], object)
    new_chosen = np.where(flipped, rejected, chosen).tolist()
    new_rejected = np.where(flipped, chosen, rejected).tolist()
    pairs = pairs.remove_columns(["chosen", "rejected"])
    pairs = pairs.add_column("chosen", new_chosen).add_column("rejected", new_rejected)
    return pairs.add_column("flipped", flipped.tolist())


def test_pairs(test, n_eval: int):
    """Up to `n_eval` test pairs of every suite domain (all when 0), the same for every run (TEST_SEED)."""
    from datasets import concatenate_datasets

    from drostudy.data import DOMAINS, select

    parts = []
    for domain in DOMAINS:
        available = sum(1 for d in test["domain"] if d == domain)
        n = min(n_eval, available) if n_eval else None
        parts.append(select(test, domains=[domain], n=n, seed=TEST_SEED))
    return concatenate_datasets([t for t in parts if len(t)])


def encode_pair_texts(tokenizer, prompts: Sequence[str], responses: Sequence[str], truncate_length: int):
    """Token ids of each (prompt, response) text: a sentence pair, cut to `truncate_length`, ending with eos.

    The prompt is cut from the left (the end of a prompt holds the question and its options). The last token is
    the tokenizer's eos (for BERT-style models eos is [SEP], already there), which TRL's models read.
    """
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        ids = tokenizer(
            list(prompts), list(responses), truncation="longest_first", max_length=truncate_length
        )
    finally:
        tokenizer.truncation_side = side
    eos = tokenizer.eos_token_id
    if eos is None:
        return ids["input_ids"]
    return [row if row[-1] == eos else row[: truncate_length - 1] + [eos] for row in ids["input_ids"]]


def tokenize_pairs(dataset, tokenizer, truncate_length: int, group_names: Sequence[str]):
    """Add `chosen_ids`, `rejected_ids` (what TRL's RewardTrainer takes as processed input) and `group`.

    group: the index of each pair's domain in `group_names` (-1 when absent). TRL skips its own tokenisation
    for such a dataset, so the TRL and cached engines see identical tokens.
    """
    index = {name: i for i, name in enumerate(group_names)}
    chosen = encode_pair_texts(tokenizer, dataset["prompt"], dataset["chosen"], truncate_length)
    rejected = encode_pair_texts(tokenizer, dataset["prompt"], dataset["rejected"], truncate_length)
    dataset = dataset.add_column("chosen_ids", chosen).add_column("rejected_ids", rejected)
    return dataset.add_column("group", [index.get(d, -1) for d in dataset["domain"]])


@torch.no_grad()
def reward_margins(model, tokenizer, tokenized, batch_size: int = 64) -> np.ndarray:
    """r(x, y_w) - r(x, y_l) for each pair of a tokenized dataset: (n,) float64.

    Pairs are batched by length (less padding) and put back in dataset order.
    """
    was_training = model.training
    model.eval()
    collate = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)
    lengths = [
        max(len(c), len(r))
        for c, r in zip(tokenized["chosen_ids"], tokenized["rejected_ids"], strict=True)
    ]
    order = np.argsort(lengths, kind="stable")
    margins = np.empty(len(order))
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rows = [
            {
                "chosen_ids": tokenized[int(i)]["chosen_ids"],
                "rejected_ids": tokenized[int(i)]["rejected_ids"],
            }
            for i in idx
        ]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        rewards = model(**batch).logits.squeeze(-1).double().cpu()
        chosen, rejected = torch.chunk(rewards, 2)  # (2B,) -> 2 x (B,)
        margins[idx] = (chosen - rejected).numpy()
    model.train(was_training)
    return margins


def pair_metrics(margins: np.ndarray, domains: Sequence[str], kinds: Sequence[str]) -> dict:
    """Accuracy (margin > 0; a tie counts as wrong), mean margin and count per domain and per domain/kind."""
    margins, domains, kinds = np.asarray(margins), np.asarray(domains), np.asarray(kinds)
    keys = {"per_domain": domains, "per_kind": np.char.add(np.char.add(domains, "/"), kinds)}
    out = {}
    for name, labels in keys.items():
        out[name] = {
            str(label): {
                "accuracy": float((margins[labels == label] > 0).mean()),
                "margin": float(margins[labels == label].mean()),
                "n": int((labels == label).sum()),
            }
            for label in sorted(set(labels.tolist()))
        }
    return out


def evaluate_pairs(model, tokenizer, test, truncate_length: int, batch_size: int = 64) -> dict:
    """Per-domain and per-kind test metrics of a reward model, and the evaluation time."""
    start = time.perf_counter()
    tokenized = tokenize_pairs(test, tokenizer, truncate_length, ())
    margins = reward_margins(model, tokenizer, tokenized, max(batch_size, 64))
    metrics = pair_metrics(margins, test["domain"], test["kind"])
    metrics["timings"] = {"eval_s": time.perf_counter() - start}
    return metrics
