"""The exact fast DPO path for a causal LM with LoRA on its top layers only (what notebook 03 trains).

With LoRA on the top `lora_layers` blocks, the embeddings and the blocks below never change, so the hidden
states entering the first trainable block are a fixed function of the token ids: `TrunkCache` computes
them once per sequence (no grad) and every step runs only the top blocks, the final norm and the LM head.
The LM head and log-softmax run at completion positions only (the prompt is most of the tokens; TRL's
fused head scores every position on a CPU). Reference log-probs are the same top blocks with the adapters
off, computed once per pair. Everything else is TRL's: tokenisation (`encode_pairs`: chat template,
completion from where prompt and prompt+completion diverge, keep-start truncation at `max_length`),
batch rows [chosen; rejected], right padding, position ids 0..T-1, summed completion log-probs. The runs
(drostudy.dpo.fast_run) truncate nothing: their pairs longer than `max_length` were left out before
(drostudy.dpo.run.fitting_rows).

Exact: the cached states equal the full forward's (causal attention: a token never sees the padding or
the other rows), so the loss and LoRA gradients equal RobustDPOTrainer's up to float rounding (tested to
1e-5 in float32). Needs LoRA dropout 0 (it is, in drostudy.runs.lora_config) and a Llama-style
model (`model.model.layers`, `norm`, `rotary_emb`, `lm_head`).

Training on the cache is drostudy.dpo.fast_train; a whole run, evaluation included, drostudy.dpo.fast_run.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.utils.rnn import pad_sequence
from transformers.masking_utils import create_causal_mask


class Sequence(NamedTuple):
    """One tokenised sequence: prompt + completion ids (truncated as TRL does) and where the completion starts."""

    ids: tuple[int, ...]
    start: int


def encode_pairs(
    tokenizer, rows, max_length: int | None
) -> tuple[list[tuple[Sequence, Sequence]], list[int]]:
    """TRL 1.16's DPO tokenisation of conversational rows (prompt, chosen, rejected message lists).

    Returns ((chosen, rejected) Sequences, indices of the kept rows): like DPOTrainer, a row whose prompt
    alone fills `max_length` is dropped and the others are truncated keep-start.
    """
    from trl.data_utils import _tokenize, common_prefix_length

    pairs, kept = [], []
    for index, row in enumerate(rows):
        prompt = _tokenize(tokenizer, row["prompt"], add_generation_prompt=True)["input_ids"]
        full = [
            _tokenize(tokenizer, row["prompt"] + row[side])["input_ids"]
            for side in ("chosen", "rejected")
        ]
        start = min(common_prefix_length(prompt, ids) for ids in full)
        if max_length is not None and start >= max_length:
            continue
        limit = max_length or max(map(len, full))
        pairs.append(tuple(Sequence(tuple(ids[:limit]), start) for ids in full))
        kept.append(index)
    return pairs, kept


def _parts(model):
    """(causal LM, its decoder backbone) of a plain or PEFT-wrapped Llama-style model."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    return lm, lm.model


def run_blocks(backbone, hidden: Tensor, attention: Tensor, blocks) -> Tensor:
    """`blocks` of the backbone on hidden (B, T, H) with attention mask (B, T), as LlamaModel.forward runs
    them: causal mask with padding, rotary embeddings of position ids 0..T-1 (right padding)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
    mask = create_causal_mask(backbone.config, hidden, attention, None, position_ids=positions)
    rotary = backbone.rotary_emb(hidden, position_ids=positions)
    for block in blocks:
        hidden = block(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
    return hidden


class TrunkCache:
    """States entering block `first_trainable` of `model`, one (length, H) tensor per token sequence, computed
    once without grad and kept in memory (keyed by the ids, so runs sharing data share the work).

    Each sequence's states and reference log-probs are computed on their own, unpadded (`batch_size` 1, the
    default): padded batches of the missing sequences made a value depend, in its last float32 digits, on
    which sequences were missing when it was computed (the batch it was padded with), so a run depended on
    the runs before it. `batch_size` > 1 batches by length as before (benchmarks/bench_dpo_trunk_fill.py
    measures both)."""

    def __init__(self, model, first_trainable: int, batch_size: int = 1):
        self.model, self.first, self.batch_size = model, first_trainable, batch_size
        self._store: dict[tuple[int, ...], Tensor] = {}
        self._reference: dict[Sequence, Tensor] = {}
        self._reference_states: dict[tuple[Sequence, ...], tuple[Tensor, Tensor]] = {}

    @torch.no_grad()
    def fill(self, sequences) -> None:
        """Compute the states of every sequence not cached yet (alone, or batched by length)."""
        missing = sorted({s.ids for s in sequences} - set(self._store), key=lambda ids: (len(ids), ids))
        _, backbone = _parts(self.model)
        device = backbone.embed_tokens.weight.device
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            ids = pad_sequence([torch.tensor(s) for s in chunk], batch_first=True).to(device)
            attention = pad_sequence(
                [torch.ones(len(s), dtype=torch.long) for s in chunk], batch_first=True
            )
            hidden = backbone.embed_tokens(ids)
            hidden = run_blocks(backbone, hidden, attention.to(device), backbone.layers[: self.first])
            for row, key in enumerate(chunk):
                self._store[key] = hidden[row, : len(key)].clone()

    def batch(self, sequences) -> Batch:
        """The padded `Batch` of `sequences` (rows in the given order; fills the cache first)."""
        self.fill(sequences)
        hidden = pad_sequence([self._store[s.ids] for s in sequences], batch_first=True)
        width = hidden.shape[1]
        attention = torch.zeros(len(sequences), width, dtype=torch.long)
        labels = torch.full((len(sequences), width), -100, dtype=torch.long)
        for row, s in enumerate(sequences):
            attention[row, : len(s.ids)] = 1
            labels[row, s.start : len(s.ids)] = torch.tensor(s.ids[s.start :])
        return Batch(hidden, attention.to(hidden.device), labels[:, 1:].to(hidden.device))

    @torch.no_grad()
    def reference_logps(self, pairs) -> tuple[Tensor, Tensor]:
        """Reference (adapters off) summed completion log-probs (chosen (n,), rejected (n,)) of `pairs`,
        each sequence computed once (the reference never changes), alone or batched as `fill`."""
        missing = sorted(
            {s for p in pairs for s in p} - set(self._reference), key=lambda s: (len(s.ids), s)
        )
        model = self.model
        off = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
        with off:
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                logps = sequence_logps(model, self.batch(chunk), self.first).cpu()
                self._reference.update(zip(chunk, logps, strict=True))
        return tuple(torch.stack([self._reference[p[side]] for p in pairs]) for side in (0, 1))

    @torch.no_grad()
    def reference_states(self, sequences) -> tuple[Tensor, Tensor]:
        """Reference (adapters off) final-norm states (M, H) at the completion positions of `sequences`,
        batched together as given, and their row ids (M,): the LM head of these is the reference's
        completion logits. Kept per batch of sequences, so an evaluation that batches its held-out pairs
        the same way in every run computes the reference's top blocks once (the same numbers each time)."""
        key = tuple(sequences)
        if key not in self._reference_states:
            model = self.model
            off = (
                model.disable_adapter()
                if hasattr(model, "disable_adapter")
                else contextlib.nullcontext()
            )
            with off:
                states, _, rows = completion_states(model, self.batch(sequences), self.first)
            self._reference_states[key] = (states, rows)
        return self._reference_states[key]

    def __len__(self) -> int:
        return len(self._store)


class Batch(NamedTuple):
    """Padded cached states (N, T, H) (zeros at padding), attention mask (N, T) and next-token labels
    (N, T-1), -100 outside the completion (TRL's shifted labels)."""

    hidden: Tensor
    attention: Tensor
    labels: Tensor


def completion_states(model, batch: Batch, first_trainable: int, hidden: Tensor | None = None):
    """Final-norm states (M, H) at the M completion positions of `batch`, their targets (M,) and row ids (M,).

    Runs the top blocks from `hidden` (default `batch.hidden`; pass a tensor with grad for WDPO) and the
    final norm; `completion_logits` adds the LM head.
    """
    _, backbone = _parts(model)
    hidden = batch.hidden if hidden is None else hidden
    hidden = run_blocks(backbone, hidden, batch.attention, backbone.layers[first_trainable:])
    scored = batch.labels != -100  # (N, T-1)
    states = backbone.norm(hidden)[:, :-1][scored]  # (N, T-1, H) -> (M, H)
    rows = torch.arange(len(batch.labels), device=scored.device)[:, None].expand_as(scored)[scored]
    return states, batch.labels[scored], rows


def completion_logits(model, batch: Batch, first_trainable: int, hidden: Tensor | None = None):
    """Logits (M, V) at the M completion positions of `batch`, their targets (M,) and row ids (M,): the LM
    head only where a label is scored (`completion_states`)."""
    states, targets, rows = completion_states(model, batch, first_trainable, hidden)
    return lm_head(model)(states), targets, rows


def lm_head(model):
    """The LM head of a plain or PEFT-wrapped model (LoRA never targets it here)."""
    return _parts(model)[0].lm_head


def sequence_logps(model, batch: Batch, first_trainable: int, hidden: Tensor | None = None) -> Tensor:
    """Summed completion log-probs (N,) of the rows of `batch` under `model` (with grad if enabled)."""
    logits, targets, rows = completion_logits(model, batch, first_trainable, hidden)
    token = logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]  # (M,)
    return token.new_zeros(len(batch.labels)).index_add(0, rows, token)


def pair_logps(model, cache: TrunkCache, pairs, with_states: bool = False):
    """Policy summed log-probs (chosen (B,), rejected (B,)) of `pairs` with grad, from the cache; with
    `with_states`, also the (2B, T, H) input states they were computed from (requiring grad, for WDPO)."""
    batch = cache.batch([p[0] for p in pairs] + [p[1] for p in pairs])  # TRL's rows: [chosen; rejected]
    states = batch.hidden.clone().requires_grad_(True) if with_states else None
    # WDPO differentiates the gradient again: the fused attention kernels have no double backward
    kernels = sdpa_kernel(SDPBackend.MATH) if with_states else contextlib.nullcontext()
    with kernels:
        chosen, rejected = sequence_logps(model, batch, cache.first, states).chunk(2)
    return (chosen, rejected, states) if with_states else (chosen, rejected)
