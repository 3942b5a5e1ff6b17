"""Evaluate a fine-tuned policy per domain: implicit-reward preferences, answer quality, drift from the reference.

For held-out (prompt, chosen, rejected, answer) rows of one domain:

- `accuracy`: fraction of pairs whose implicit DPO reward beta * (log pi - log pi_ref) ranks chosen above
  rejected; `margin`: the mean reward difference (chosen - rejected).
- `correct`: fraction of greedy answers that drostudy.answers.score_answer accepts (a normalised match);
  `correct_before` is the same for the reference policy, so the change from fine-tuning is visible.
- `kl`: the mean over prompts of KL(pi || pi_ref) summed over the tokens of the chosen (reference) response,
  teacher-forced and exact over the vocabulary (nats per response), so a gain bought by drifting away shows.

Prompts are chat messages (lists of {"role", "content"}) rendered with the tokenizer's chat template exactly
as TRL's DPOTrainer renders conversational data; completions are assistant strings. The reference policy is
`reference` when given, else the same PEFT model with its adapters disabled.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from drostudy.answers import (  # noqa: F401 (re-exported: the stages score answers through evaluate)
    fraction_correct,
    is_correct,
    is_refusal,
    normalise,
    reference_answer,
    score_answer,
)
from drostudy.progress import tqdm

Messages = list[dict[str, str]]


def preference_metrics(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> dict[str, float]:
    """Implicit-reward preference accuracy and mean margin; inputs are summed log-probs (n,)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta!r}")
    margins = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # (n,)
    return {"accuracy": float((margins > 0).double().mean()), "margin": float(margins.double().mean())}


def encode(tokenizer, prompts: Sequence[Messages], completions: Sequence) -> list[tuple[list, list]]:
    """(prompt_ids, completion_ids) per row, split where TRL splits conversational data.

    A completion is an assistant string or its message list ([{"role": "assistant", ...}]).
    """
    out = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        turn = (
            [{"role": "assistant", "content": completion}] if isinstance(completion, str) else completion
        )
        full = [*prompt, *turn]
        full_ids = tokenizer.apply_chat_template(full, tokenize=True)
        prompt_ids, full_ids = _ids(prompt_ids), _ids(full_ids)
        split = next(
            (i for i, (a, b) in enumerate(zip(prompt_ids, full_ids, strict=False)) if a != b),
            len(prompt_ids),
        )
        out.append((full_ids[:split], full_ids[split:]))
    return out


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def _pad_batch(pairs: list[tuple[list, list]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (B, T) input ids, attention mask and completion mask."""
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for row, (p, c) in enumerate(pairs):
        ids[row, : len(p) + len(c)] = torch.tensor(p + c)
        attn[row, : len(p) + len(c)] = 1
        comp[row, len(p) : len(p) + len(c)] = 1
    return ids, attn, comp


def reference_context(model, reference=None):
    """A context under which `reference or model` computes the reference policy (PEFT: adapters off)."""
    if reference is not None:
        return contextlib.nullcontext()
    if not hasattr(model, "disable_adapter"):
        raise ValueError("pass `reference` (a model) when the policy is not a PEFT model")
    return model.disable_adapter()


@torch.no_grad()
def sequence_stats(
    model,
    tokenizer,
    prompts: Sequence[Messages],
    completions: Sequence[str],
    reference=None,
    batch_size=8,
    with_reference=True,
) -> dict[str, Tensor]:
    """Summed completion log-probs under the policy and the reference, and their token KL, per row.

    Returns {"policy_logps": (n,), "ref_logps": (n,), "kl": (n,)} where kl is sum over completion tokens
    of KL(pi(.|context) || pi_ref(.|context)), exact over the vocabulary; only "policy_logps" when
    `with_reference` is False (half the cost).
    """
    model.eval()
    pairs = encode(tokenizer, prompts, completions)
    out = {"policy_logps": [], "ref_logps": [], "kl": []}
    for start in range(0, len(pairs), batch_size):
        ids, attn, comp = _pad_batch(pairs[start : start + batch_size], tokenizer.pad_token_id)
        ids, attn = ids.to(model.device), attn.to(model.device)
        mask = comp[:, 1:].to(model.device).float()  # (B, T-1): predicted tokens that are completion
        logp = F.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
        target = ids[:, 1:, None]
        out["policy_logps"].append((logp.gather(-1, target)[..., 0] * mask).sum(1))
        if not with_reference:
            continue
        with reference_context(model, reference):
            ref_logits = (reference or model)(input_ids=ids, attention_mask=attn).logits[:, :-1]
        ref_logp = F.log_softmax(ref_logits.float(), -1)
        out["ref_logps"].append((ref_logp.gather(-1, target)[..., 0] * mask).sum(1))
        out["kl"].append(((logp.exp() * (logp - ref_logp)).sum(-1) * mask).sum(1))  # (B, T-1, V) -> (B,)
    return {k: torch.cat(v).cpu() for k, v in out.items() if v}


def reference_logps(model, tokenizer, prompts, completions, reference=None, batch_size=8) -> Tensor:
    """Summed completion log-probs (n,) under the reference policy (cacheable: it never changes)."""
    with reference_context(model, reference):
        stats = sequence_stats(
            reference or model,
            tokenizer,
            prompts,
            completions,
            batch_size=batch_size,
            with_reference=False,
        )
    return stats["policy_logps"]


@torch.no_grad()
def generate(
    model, tokenizer, prompts: Sequence[Messages], max_new_tokens=16, batch_size=16, desc="generate"
):
    """Greedy answers (strings, special tokens removed) to chat `prompts`, in batches, left-padded."""
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            texts = [
                tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                for p in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            new = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )[:, batch["input_ids"].shape[1] :]
            answers += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [a.strip() for a in answers]


def unique_prompts(rows: Sequence[dict], n: int | None = None) -> list[dict]:
    """The first row of each distinct prompt (pairs share prompts), at most `n` of them."""
    first = {}
    for row in rows:
        first.setdefault(repr(row["prompt"]), row)
    return list(first.values())[:n]


def answer_accuracy(model, tokenizer, rows, max_new_tokens=16, batch_size=16) -> float:
    """Fraction of `rows` (dicts with prompt, answer) whose greedy answer `score_answer` accepts."""
    answers = generate(model, tokenizer, [r["prompt"] for r in rows], max_new_tokens, batch_size)
    return fraction_correct(answers, [r["answer"] for r in rows])


def evaluate_domain(
    model,
    tokenizer,
    rows,
    beta: float,
    reference=None,
    max_new_tokens=16,
    n_generate=None,
    batch_size=8,
    ref_rejected_logps: Tensor | None = None,
) -> dict[str, float]:
    """accuracy, margin, kl on `rows` (dicts with prompt, chosen, rejected, answer) and `correct` on the
    first `n_generate` distinct prompts (all if None): see the module docstring. `ref_rejected_logps`
    (n,), from `reference_logps`, saves recomputing them; the reference's own fraction correct is
    `answer_accuracy` under `reference_context`."""
    prompts = [r["prompt"] for r in rows]
    chosen = sequence_stats(
        model, tokenizer, prompts, [r["chosen"] for r in rows], reference, batch_size
    )
    rejected = [r["rejected"] for r in rows]
    if ref_rejected_logps is None:
        ref_rejected_logps = reference_logps(model, tokenizer, prompts, rejected, reference, batch_size)
    policy_rejected = sequence_stats(
        model, tokenizer, prompts, rejected, reference, batch_size, with_reference=False
    )["policy_logps"]
    metrics = preference_metrics(
        chosen["policy_logps"], policy_rejected, chosen["ref_logps"], ref_rejected_logps, beta
    )
    metrics["kl"] = float(chosen["kl"].double().mean())
    metrics["correct"] = answer_accuracy(
        model, tokenizer, unique_prompts(rows, n_generate), max_new_tokens, 2 * batch_size
    )
    metrics["n"] = len(rows)
    return metrics
