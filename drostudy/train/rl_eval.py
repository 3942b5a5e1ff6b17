"""The RL stage's reward function, prompts and per-domain evaluation.

- `LearnedReward`: a sequence-classification reward model as a TRL reward function. It scores the text pair
  (prompt, response) exactly as the reward-model stage trained it (drostudy.train.reward_data.encode_pair_texts:
  "prompt [SEP] response", the prompt cut from the left), and logs `samples/correct`, the reference-graded
  correctness of the sampled completions (drostudy.evaluate.score_answer), so reward over-optimisation (learned
  reward up, correctness flat or down) is visible over training at no extra cost.
- `prompt_rows`: distinct suite prompts as chat rows {prompt (messages), answer, domain}, short enough to fit.
- `evaluate_rl_policy`: per domain, on greedy answers to held-out prompts: `learned_reward` (mean reward-model
  score), `correct` (fraction the reference-answer grader accepts; a refusal for a harmful request) and `kl`
  (mean over prompts of KL(pi || pi_ref) summed over the answer's tokens, exact over the vocabulary, along the
  policy's own greedy answer; the reference is the policy with its LoRA adapters disabled).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from drostudy import evaluate


def _text(message) -> str:
    """The text of a TRL prompt/completion: a string, or the last message's content of a conversation."""
    return message if isinstance(message, str) else message[-1]["content"]


class LearnedReward:
    """r(x, y) of a sequence classifier with one output, callable as a TRL reward function.

    model, tokenizer: from drostudy.models.load_reward_model (any folder saved with save_pretrained);
    max_length: tokens per (prompt, response) text, as in the reward-model stage.
    """

    __name__ = "learned_reward"  # TRL names the reward's metrics after it: rewards/learned_reward/mean

    def __init__(self, model, tokenizer, max_length: int = 128, batch_size: int = 64):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.max_length, self.batch_size = max_length, batch_size

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Rewards of aligned (prompt text, response text) pairs: n strings each -> n floats."""
        from drostudy.train.reward_data import encode_pair_texts

        ids = encode_pair_texts(self.tokenizer, list(prompts), list(responses), self.max_length)
        device, out = next(self.model.parameters()).device, []
        for start in range(0, len(ids), self.batch_size):
            rows = ids[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out += self.model(**batch).logits[:, 0].float().cpu().tolist()  # (B, 1) -> B floats
        return out

    def __call__(self, prompts, completions, answer=None, log_metric=None, **kwargs) -> list[float]:
        responses = [_text(c) for c in completions]
        if answer is not None and log_metric is not None:
            log_metric("samples/correct", evaluate.fraction_correct(responses, list(answer)))
        return self.score([_text(p) for p in prompts], responses)


def prompt_rows(
    ds, domain: str, n: int, tokenizer, max_prompt_tokens: int, system_prompt: str, seed: int
):
    """Up to `n` distinct prompts of `domain` in suite split `ds` as {prompt, answer, domain} chat rows.

    Prompts longer than `max_prompt_tokens` (chat template included) are left out, not truncated. The
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
        if len(ids["input_ids"] if hasattr(ids, "keys") else ids) > max_prompt_tokens:
            continue
        answer = evaluate.reference_answer(row["chosen"]) if row["kind"] != "unsafe_compliance" else None
        rows.append({"prompt": messages, "answer": answer, "domain": domain})
        if len(rows) == n:
            break
    return rows


def evaluate_rl_policy(model, tokenizer, reward: LearnedReward, rows_by_domain: dict, max_new_tokens: int,
                       reference=None) -> dict[str, dict[str, float]]:  # fmt: skip
    """{domain: {learned_reward, correct, kl, n}} for greedy answers (see the module docstring).

    reference: a separate reference model, or None for a PEFT policy (adapters disabled). Pass the policy
    itself as `reference` to score the reference policy (then kl is 0).
    """
    out = {}
    for domain, rows in rows_by_domain.items():
        prompts = [r["prompt"] for r in rows]
        answers = evaluate.generate(model, tokenizer, prompts, max_new_tokens, desc=f"answers {domain}")
        rewards = reward.score([_text(p) for p in prompts], answers)
        stats = evaluate.sequence_stats(model, tokenizer, prompts, answers, reference)
        out[domain] = {
            "learned_reward": float(sum(rewards) / len(rewards)),
            "correct": evaluate.fraction_correct(answers, [r["answer"] for r in rows]),
            "kl": float(stats["kl"].double().mean()),
            "n": len(rows),
        }
    return out
