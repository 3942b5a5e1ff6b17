"""The RL stage's reward: a learned reward model as a TRL reward function, and the reward model it loads.

- `LearnedReward`: a sequence-classification reward model as a TRL reward function. It scores the text pair
  (prompt, response) exactly as the reward-model stage trained it (drostudy.reward.data.encode_pair_texts:
  "prompt [SEP] response", the prompt cut from the left), and logs `samples/correct`, the reference-graded
  correctness of the sampled completions (drostudy.evaluate.score_answer), so reward over-optimisation (learned
  reward up, correctness flat or down) is visible over training at no extra cost.
- `train_reward_for_rl`: a reward model trained by the reward-model stage (its cached-encoder engine, any
  RMConfig) and saved to a folder once, for `--reward-model DIR`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from drostudy import evaluate
from drostudy.io import atomic_write_json


def message_text(message) -> str:
    """The text of a TRL prompt/completion: a string, or the last message's content of a conversation."""
    return message if isinstance(message, str) else message[-1]["content"]


class LearnedReward:
    """r(x, y) of a sequence classifier with one output, callable as a TRL reward function.

    model, tokenizer: from drostudy.models.load_reward_model (any folder saved with save_pretrained);
    truncate_length: tokens of each (prompt, response) text the model reads, the prompt cut from the left,
    as in the reward-model stage.
    """

    __name__ = "learned_reward"  # TRL names the reward's metrics after it: rewards/learned_reward/mean

    def __init__(self, model, tokenizer, truncate_length: int = 128, batch_size: int = 64):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.truncate_length, self.batch_size = truncate_length, batch_size

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Rewards of aligned (prompt text, response text) pairs: n strings each -> n floats."""
        from drostudy.reward.data import encode_pair_texts

        ids = encode_pair_texts(self.tokenizer, list(prompts), list(responses), self.truncate_length)
        device, out = next(self.model.parameters()).device, []
        for start in range(0, len(ids), self.batch_size):
            rows = ids[start : start + self.batch_size]
            batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out += self.model(**batch).logits[:, 0].float().cpu().tolist()  # (B, 1) -> B floats
        return out

    def __call__(self, prompts, completions, answer=None, log_metric=None, **kwargs) -> list[float]:
        responses = [message_text(c) for c in completions]
        if answer is not None and log_metric is not None:
            log_metric("samples/correct", evaluate.fraction_correct(responses, list(answer)))
        return self.score([message_text(p) for p in prompts], responses)


def train_reward_for_rl(folder: str | Path, **rm_fields) -> Path:
    """Train a reward model with drostudy.reward.fast (the cached engine) and save it in `folder` (once).

    rm_fields: RMConfig fields (default here: engine "cached" with 4 frozen layers, the reward stage's fast
    path). The folder gets the model and tokenizer (save_pretrained) and `rm_metrics.json` (the reward stage's
    metrics: per-domain test accuracy, history, config). A folder already holding a model trained with
    another config is an error, never silently reused; one saved before an RMConfig field existed counts as
    trained at that field's default.
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
            model, tokenizer, config.frozen_layers, config.truncate_length
        )
        metrics = reward_cached.run_cached(config, model, initial, features, train, test)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "rm_metrics.json", {**metrics, "config": wanted})

    folder = build_once(Path(folder), build)
    found = json.loads((folder / "rm_metrics.json").read_text())["config"]
    # a model saved before a field existed was trained at that field's default (e.g. weight_decay 0)
    defaults = json.loads(json.dumps(dataclasses.asdict(RMConfig())))
    found = {k: found.get(k, defaults[k]) for k in wanted} if set(found) <= set(wanted) else found
    if found != wanted:
        raise ValueError(
            f"{str(folder)!r} holds a reward model of another config; choose another folder"
        )
    return folder
