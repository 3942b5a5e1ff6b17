"""The RL stage's prompts and per-domain evaluation.

- `prompt_rows`: distinct suite prompts as chat rows {prompt (messages), answer, domain}, short enough to fit.
- `evaluate_rl_policy`: per domain, on greedy answers to held-out prompts: `learned_reward` (mean reward-model
  score), `correct` (fraction the reference-answer grader accepts; a refusal for a harmful request) and `kl`
  (mean over prompts of KL(pi || pi_ref) summed over the answer's tokens, exact over the vocabulary, along the
  policy's own greedy answer; the reference is the policy with its LoRA adapters disabled).
"""

from __future__ import annotations

from drostudy import evaluate
from drostudy.rl.reward import LearnedReward, message_text


def prompt_rows(ds, domain: str, n: int, tokenizer, max_length: int, system_prompt: str, seed: int):
    """Up to `n` distinct prompts of `domain` in suite split `ds` as {prompt, answer, domain} chat rows
    (n = 0: every one).

    Prompts longer than `max_length` tokens (chat template included) are left out, never truncated. The
    answer is the reference answer inside the chosen response (None for a harmful request: refusing is
    correct there); `seed` fixes which prompts are drawn.
    """
    from drostudy.data import select

    rows, seen = [], set()
    for row in select(ds, domains=[domain], seed=seed):
        if row["prompt"] in seen:
            continue
        seen.add(row["prompt"])
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages = [*system, {"role": "user", "content": row["prompt"]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if len(ids["input_ids"] if hasattr(ids, "keys") else ids) > max_length:
            continue
        answer = evaluate.reference_answer(row["chosen"]) if row["kind"] != "unsafe_compliance" else None
        rows.append({"prompt": messages, "answer": answer, "domain": domain})
        if len(rows) == n:
            break
    return rows


def evaluate_rl_policy(
    model, tokenizer, reward: LearnedReward, rows_by_domain: dict, max_new_tokens: int, reference=None
) -> dict[str, dict[str, float]]:
    """{domain: {learned_reward, correct, kl, n}} for greedy answers (see the module docstring).

    reference: a separate reference model, or None for a PEFT policy (adapters disabled). Pass the policy
    itself as `reference` to score the reference policy (then kl is 0).
    """
    out = {}
    for domain, rows in rows_by_domain.items():
        prompts = [r["prompt"] for r in rows]
        answers = evaluate.generate(model, tokenizer, prompts, max_new_tokens, desc=f"answers {domain}")
        rewards = reward.score([message_text(p) for p in prompts], answers)
        stats = evaluate.sequence_stats(model, tokenizer, prompts, answers, reference)
        out[domain] = {
            "learned_reward": float(sum(rewards) / len(rewards)),
            "correct": evaluate.fraction_correct(answers, [r["answer"] for r in rows]),
            "kl": float(stats["kl"].double().mean()),
            "n": len(rows),
        }
    return out
