"""The cached-encoder fast path for BERT-style reward models (what notebook 02 trains).

With the embeddings and the lower `frozen_layers` blocks frozen, their output for a text never changes, so it
is computed once per text (`FrozenFeatures`, kept across runs) and only the top blocks, the pooler and the
scalar head are trained. The model function is exactly BertForSequenceClassification's (tested against the
full forward); the loss is the same drostudy.losses.robust_bradley_terry_loss as the TRL path, and the
optimiser is TRL's default (AdamW, linear decay to 0, no warm-up, gradient norm clipped at 1).

Per step it logs what the worst case did: `dro/weight_mass/<domain>` and `dro/kind_mass/<kind>` (total weight
on each training domain and pair kind; uniform weights give their batch shares), and per pair the mean
relative weight n * w_i it received (`pair_weights`, 1 = ordinary).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from transformers.masking_utils import create_bidirectional_mask

from drostudy.io import seed_everything
from drostudy.progress import tqdm
from drostudy.reward.data import encode_pair_texts, pair_metrics, prepare_splits
from drostudy.reward.objective import (
    bradley_terry_objective,
    dro_metrics,
    freeze_lower_layers,
    weight_mass,
)


class FrozenFeatures:
    """Outputs of a reward model's frozen lower part, one (length, hidden) tensor per text, computed once.

    model: a BertForSequenceClassification-like model (base_model.encoder.layer, pooler, classifier).
    Texts are keyed by pair id and response text (not by side), so datasets sharing pairs share the work
    and a pair whose chosen and rejected are swapped (label noise) reuses its features.
    """

    def __init__(self, model, tokenizer, frozen_layers: int, truncate_length: int, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.frozen_layers, self.truncate_length = frozen_layers, truncate_length
        self._store: dict[tuple[str, str], torch.Tensor] = {}

    def pairs(self, dataset) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(chosen, rejected) lists of (length_i, hidden) tensors for the pairs of `dataset`, in order."""
        keys = {
            side: list(zip(dataset["id"], dataset[side], strict=True)) for side in ("chosen", "rejected")
        }
        for side in ("chosen", "rejected"):
            missing = [i for i, key in enumerate(keys[side]) if key not in self._store]
            if missing:
                rows = dataset.select(missing)
                ids = encode_pair_texts(self.tokenizer, rows["prompt"], rows[side], self.truncate_length)
                for i, hidden in zip(missing, self._encode(ids), strict=True):
                    self._store[keys[side][i]] = hidden
        return tuple([self._store[key] for key in keys[side]] for side in ("chosen", "rejected"))

    @torch.no_grad()
    def _encode(self, ids: list[list[int]]) -> list[torch.Tensor]:
        base, out = self.model.base_model, [None] * len(ids)
        order = np.argsort([len(x) for x in ids], kind="stable")  # batch by length: little padding
        batches = range(0, len(ids), self.batch_size)
        for start in tqdm(batches, desc="frozen layers", leave=False, disable=len(batches) < 4):
            idx = order[start : start + self.batch_size]
            input_ids = pad_sequence([torch.tensor(ids[i]) for i in idx], batch_first=True)
            mask = pad_sequence(
                [torch.ones(len(ids[i]), dtype=torch.long) for i in idx], batch_first=True
            )
            states = base(
                input_ids=input_ids, attention_mask=mask, output_hidden_states=True
            ).hidden_states
            # hidden_states[k] is the input of block k. With every block frozen only the pooler reads the
            # features, and it reads [CLS] alone: keeping position 0 is exact and ~100x smaller.
            whole = self.frozen_layers < len(base.encoder.layer)
            for row, i in enumerate(idx):
                out[i] = states[self.frozen_layers][row, : len(ids[i]) if whole else 1].clone()
        return out


def top_rewards(model, hidden: torch.Tensor, mask: torch.Tensor, frozen_layers: int) -> torch.Tensor:
    """Rewards from cached inputs of block `frozen_layers`: hidden (B, T, H), mask (B, T) -> (B,).

    The pooler reads only the [CLS] position, so the last block runs at [CLS] only (`cls_block`).
    """
    base = model.base_model
    layers = base.encoder.layer[frozen_layers:]
    if len(layers):
        attention = create_bidirectional_mask(
            config=base.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in layers[:-1]:
            hidden = layer(hidden, attention)
        hidden = cls_block(layers[-1], hidden, mask)
    pooled = base.pooler(hidden) if base.pooler is not None else hidden[:, 0]
    return model.classifier(model.dropout(pooled)).squeeze(-1)  # (B, 1) -> (B,)


def cls_block(layer, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A BERT block's output at position 0 only: hidden (B, T, H), mask (B, T) -> (B, 1, H).

    Exact (float rounding apart). Only [CLS] is projected: per head, its query's score against position j
    is (W_k^T q) . x_j plus q . b_k, which is the same for every j and cancels in the softmax; its context
    is W_v (sum_j a_j x_j) + b_v. So the block costs O(T H) per head instead of the O(T H^2) of projecting
    every key and value (4x less CPU forward and backward for one trainable block of MiniLM at 128 tokens,
    benchmarks/bench_capacity_reward.py), and the feed-forward part runs on one position. Attention dropout
    is off (as in TRL).
    """
    attn = layer.attention.self
    batch, _, width = hidden.shape
    heads, size = attn.num_attention_heads, attn.attention_head_size
    query = attn.query(hidden[:, :1]).view(batch, heads, size)
    folded = torch.einsum("bhd,hdi->bhi", query, attn.key.weight.view(heads, size, width))
    scores = torch.einsum("bhi,bti->bht", folded, hidden) / math.sqrt(size)
    scores = scores.masked_fill(mask[:, None, :] == 0, torch.finfo(hidden.dtype).min)
    mixed = torch.einsum("bht,bti->bhi", scores.softmax(-1), hidden)  # (B, heads, H)
    value = attn.value.weight.view(heads, size, width)
    context = torch.einsum("bhi,hdi->bhd", mixed, value) + attn.value.bias.view(heads, size)
    attended = layer.attention.output(context.reshape(batch, 1, width), hidden[:, :1])
    return layer.output(layer.intermediate(attended), attended)


def _padded(texts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """list of (length_i, H) -> (B, T, H) zero-padded and its (B, T) attention mask."""
    mask = pad_sequence([torch.ones(len(t), dtype=torch.long) for t in texts], batch_first=True)
    return pad_sequence(texts, batch_first=True), mask


def pair_rewards(model, chosen, rejected, frozen_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(r(x, y_w), r(x, y_l)), each (B,), from one forward over the 2B texts [chosen; rejected] (as TRL)."""
    hidden, mask = _padded(list(chosen) + list(rejected))
    return torch.chunk(top_rewards(model, hidden, mask, frozen_layers), 2)  # (2B,) -> 2 x (B,)


@torch.no_grad()
def cached_margins(model, chosen, rejected, frozen_layers: int, batch_size: int = 128) -> np.ndarray:
    """r(x, y_w) - r(x, y_l) for every cached pair: (n,) float64."""
    model.eval()
    order = np.argsort(
        [max(len(c), len(r)) for c, r in zip(chosen, rejected, strict=True)], kind="stable"
    )
    margins = np.empty(len(order))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        rc, rr = pair_rewards(model, [chosen[i] for i in idx], [rejected[i] for i in idx], frozen_layers)
        margins[idx] = (rc - rr).double().numpy()
    return margins


def reset_trainable(model, initial: dict[str, torch.Tensor], seed: int) -> None:
    """Restore the pretrained top weights and draw a new scalar head from `seed` (BERT's normal init)."""
    model.load_state_dict(initial, strict=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.classifier
        head.weight.copy_(
            torch.randn(head.weight.shape, generator=generator) * model.config.initializer_range
        )
        head.bias.zero_()


def train_on_cache(config, model, train, chosen, rejected) -> tuple[list[dict], np.ndarray]:
    """Minimise the (robust) BT loss of `config` over cached training pairs for `config.steps` steps; returns
    (history, pair_weights).

    train: the pairs' dataset (for domain and kind); chosen, rejected: their cached features. The batches are
    the slices of a permutation drawn from the seed at the start of each pass over the pairs (the last batch
    of a pass may be smaller), as TRL's sampler does.
    pair_weights (n,): mean of n_batch * w_i over the steps that saw pair i (1 everywhere when ordinary).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    n, bs, total = len(chosen), config.batch_size, config.steps
    per_pass = math.ceil(n / bs)  # batches per pass over the pairs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / total))
    domains, kinds = np.asarray(train["domain"]), np.asarray(train["kind"])
    all_kinds = sorted(set(kinds.tolist()))
    group_of = {d: i for i, d in enumerate(config.train_domains)}
    groups = torch.tensor([group_of[d] for d in domains])
    generator = torch.Generator().manual_seed(config.seed)
    weight_sum, seen = np.zeros(n), np.zeros(n)
    history, window = [], defaultdict(list)
    model.train()
    for step in range(total):
        if step % per_pass == 0:
            order = torch.randperm(n, generator=generator)
        idx = order[(step % per_pass) * bs :][:bs]
        rc, rr = pair_rewards(
            model, [chosen[i] for i in idx], [rejected[i] for i in idx], config.frozen_layers
        )
        out = bradley_terry_objective(
            rc,
            rr,
            config.divergence,
            config.radius,
            config.level,
            groups[idx],
            outlier_fraction=config.outlier_fraction,
            label_smoothing=config.label_smoothing,
        )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        w = out.weights.double().numpy()
        weight_sum[idx.numpy()] += len(idx) * w  # n_batch * w_i: 1 for uniform weights
        seen[idx.numpy()] += 1
        batch = idx.numpy()
        for key, value in _step_metrics(out, groups[idx], kinds[batch], all_kinds, config).items():
            window[key].append(value)
        if (step + 1) % config.logging_steps == 0 or step + 1 == total:
            history.append({"step": step + 1, "epoch": (step + 1) / per_pass} | _means(window))
            window.clear()
    return history, weight_sum / np.maximum(seen, 1)


def _step_metrics(out, groups, kinds, all_kinds, config) -> dict[str, float]:
    """Loss, accuracy, dro/* and the weight mass on every training domain and kind (0 when absent)."""
    metrics = {"loss": float(out.loss.detach()), "accuracy": out.metrics["rewards/accuracy"]}
    metrics |= dro_metrics(out, groups, config.train_domains)
    w = out.weights.double().numpy()
    return metrics | weight_mass(w, kinds, all_kinds, "dro/kind_mass/")


def _means(window: dict[str, list[float]]) -> dict[str, float]:
    return {key: float(np.mean(values)) for key, values in window.items()}


def load_cached_model(config):
    """(model, tokenizer, initial trainable weights) for the cached engine of `config`."""
    from drostudy.models import load_reward_model

    model, tokenizer = load_reward_model(config.model)
    if not hasattr(model, "classifier") or not hasattr(model.base_model, "encoder"):
        raise ValueError(
            f"engine 'cached' needs a BERT-style model; got {type(model).__name__} ({config.model!r})"
        )
    freeze_lower_layers(model, config.frozen_layers)
    model.eval()  # dropout off, as TRL's disable_dropout; train_on_cache switches to train mode
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    initial = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return model, tokenizer, initial


def run_cached(config, model, initial, features: FrozenFeatures, train, test) -> dict:
    """One run of `config` on shared cached features: train from the pretrained top, evaluate every domain."""
    seed_everything(config.seed)
    reset_trainable(model, initial, config.seed)
    start = time.perf_counter()
    chosen, rejected = features.pairs(train)
    history, pair_weights = train_on_cache(config, model, train, chosen, rejected)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    margins = cached_margins(model, *features.pairs(test), config.frozen_layers)
    metrics = pair_metrics(margins, test["domain"], test["kind"])
    metrics["timings"] = {"train_s": train_s, "eval_s": time.perf_counter() - start}
    metrics["test_margins"] = margins.round(5).tolist()  # in test-pair order: robustness curves
    metrics["pair_weights"] = {
        "id": list(train["id"]),
        "relative_weight": pair_weights.round(4).tolist(),
    }
    return {"stage": "rm", "method": config.method, "engine": "cached", **metrics, "history": history}


def train_cached_reward_model(config) -> dict:
    """The cached engine for one config on its own (the CLI with --engine cached)."""
    if config.frozen_layers == 0:
        raise ValueError("engine 'cached' needs frozen_layers >= 1 (nothing to cache otherwise)")
    train, test = prepare_splits(config)
    model, tokenizer, initial = load_cached_model(config)
    features = FrozenFeatures(model, tokenizer, config.frozen_layers, config.truncate_length)
    return run_cached(config, model, initial, features, train, test)
