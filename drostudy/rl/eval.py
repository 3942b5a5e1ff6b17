"""The RL stage's reward function, prompts and per-domain evaluation.

- `LearnedReward`: a sequence-classification reward model as a TRL reward function. It scores the text pair
  (prompt, response) exactly as the reward-model stage trained it (drostudy.reward.data.encode_pair_texts:
  "prompt [SEP] response", the prompt cut from the left), and logs `samples/correct`, the reference-graded
  correctness of the sampled completions (drostudy.evaluate.score_answer), so reward over-optimisation (learned
  reward up, correctness flat or down) is visible over training at no extra cost.
- `train_reward_for_rl`: a reward model trained by the reward-model stage (its cached-encoder engine, any
  RMConfig) and saved to a folder once, for `--reward-model DIR`.
- `prompt_rows`: distinct suite prompts as chat rows {prompt (messages), answer, domain}, short enough to fit.
- `evaluate_rl_policy`: per domain, on greedy answers to held-out prompts: `learned_reward` (mean reward-model
  score), `correct` (fraction the reference-answer grader accepts; a refusal for a harmful request) and `kl`
  (mean over prompts of KL(pi || pi_ref) summed over the answer's tokens, exact over the vocabulary, along the
  policy's own greedy answer; the reference is the policy with its LoRA adapters disabled).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from drostudy import evaluate
from drostudy.io import atomic_write_json


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
        from drostudy.reward.data import encode_pair_texts

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


def train_reward_for_rl(folder: str | Path, **rm_fields) -> Path:
    """Train a reward model with drostudy.reward.fast (the cached engine) and save it in `folder` (once).

    rm_fields: RMConfig fields (default here: engine "cached" with 4 frozen layers, the reward stage's fast
    path). The folder gets the model and tokenizer (save_pretrained) and `rm_metrics.json` (the reward stage's
    metrics: per-domain test accuracy, history, config). A folder already holding a model trained with
    another config is an error, never silently reused.
    """
    from drostudy.models import build_once
    from drostudy.reward import data as reward_data
    from drostudy.reward import fast as reward_cached
    from drostudy.reward.run import RMConfig

    config = RMConfig(**({"engine": "cached", "frozen_layers": 4} | rm_fields))
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))

    def build(tmp: Path) -> None:
        train, test = reward_data.prepare_splits(config)
        model, tokenizer, initial = reward_cached.load_cached_model(config)
        features = reward_cached.FrozenFeatures(
            model, tokenizer, config.frozen_layers, config.max_length
        )
        metrics = reward_cached.run_cached(config, model, initial, features, train, test)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "rm_metrics.json", {**metrics, "config": wanted})

    folder = build_once(Path(folder), build)
    found = json.loads((folder / "rm_metrics.json").read_text())["config"]
    if found != wanted:
        raise ValueError(
            f"{str(folder)!r} holds a reward model of another config; choose another folder"
        )
    return folder


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


# --- summaries for notebook 04 -------------------------------------------------------------------------

HISTORY_METRICS = {
    "rewards/learned_reward/mean": "learned_reward",
    "samples/correct": "correct",
    "kl": "kl",
}


def history_frame(runs: Sequence[dict]):
    """Training curves of RL runs (metrics dicts) as a long DataFrame: method, seed, step, metric, value.

    metric: learned_reward (mean reward-model score of the sampled completions), correct (their
    reference-graded correctness) and kl (TRL's per-token KL to the reference), from each run's history.
    """
    import pandas as pd

    rows = [
        {
            "method": run["method"],
            "seed": run["seed"],
            "step": entry["step"],
            "metric": name,
            "value": entry[key],
        }
        for run in runs
        for entry in run["history"]
        for key, name in HISTORY_METRICS.items()
        if key in entry
    ]
    return pd.DataFrame(rows, columns=["method", "seed", "step", "metric", "value"])


def gains(runs: Sequence[dict]):
    """Per run and domain: change from the reference policy in learned reward and in correctness.

    Returns a DataFrame (method, seed, domain, in_distribution, reward_gain, correct_gain). Reward
    over-optimisation shows as a reward gain that brings no correctness gain (or a loss).
    """
    import pandas as pd

    rows = []
    for run in runs:
        train = set(run["config"]["train_domains"])
        for domain, s in run["per_domain"].items():
            rows.append({
                "method": run["method"], "seed": run["seed"], "domain": domain, "in_distribution": domain in train,
                "reward_gain": s["learned_reward"] - s["learned_reward_before"],
                "correct_gain": s["correct"] - s["correct_before"],
            })  # fmt: skip
    return pd.DataFrame(rows)


def overoptimisation_text(gain_table) -> str:
    """One sentence per method and split (ID/OOD) from a `gains` table: mean gains over seeds (each seed's
    mean over the split's domains) with 95% t-intervals. Over-optimised means the learned reward rose
    beyond its interval while correctness did not rise; a reward change inside the seed noise is said so."""
    from drostudy.analysis.results import t_interval

    per_seed = gain_table.groupby(["method", "in_distribution", "seed"])[["reward_gain", "correct_gain"]]
    lines = []
    for (method, in_dist), part in per_seed.mean().groupby(level=[0, 1]):
        reward, reward_half = t_interval(part["reward_gain"].to_numpy())
        correct, correct_half = t_interval(part["correct_gain"].to_numpy())
        if math.isnan(reward_half):  # one seed: no interval
            verdict = ("over-optimised" if reward > 0 and correct <= 0 else "not over-optimised") + (
                " by the signs of one seed"
            )
        elif reward - reward_half <= 0:
            verdict = (
                "the learned reward did not rise beyond seed noise, so nothing to call over-optimisation"
            )
        else:
            verdict = "over-optimised" if correct <= 0 else "not over-optimised"
        where = "in distribution" if in_dist else "out of distribution"
        lines.append(
            f"{method}, {where}: learned reward {_pm(reward, reward_half)}, reference-graded correctness "
            f"{_pm(correct, correct_half)} vs the reference policy ({verdict})."
        )
    return "\n".join(lines)


def _pm(mean: float, half: float) -> str:
    return f"{mean:+.3f}" if math.isnan(half) else f"{mean:+.3f} ± {half:.3f}"
