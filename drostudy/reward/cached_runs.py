"""Many cached-engine runs on one model: the suite, the reward model and its frozen-feature cache, loaded once.

`CachedRuns(base)` loads them for the model, frozen layers, truncation and test pairs of `base` (an
RMConfig); `train(config)` then trains and evaluates one config of that model on them
(drostudy.reward.fast.run_cached). Notebook 02's plan (drostudy.reward.study) runs its grid through it.
"""

from __future__ import annotations

from drostudy.reward import data as reward_data
from drostudy.reward import fast
from drostudy.reward.run import RMConfig


class CachedRuns:
    """What the cached-engine runs of one model share: the suite's training split, the model with its
    pretrained top weights, the frozen-feature cache (`features`) and the test pairs (`test`)."""

    def __init__(self, base: RMConfig):
        from drostudy.data import load_suite

        suite = load_suite()
        self.suite_train = suite["train"]
        self.model, self.tokenizer, self.initial = fast.load_cached_model(base)
        self.features = fast.FrozenFeatures(
            self.model, self.tokenizer, base.frozen_layers, base.truncate_length
        )
        self.test = reward_data.test_pairs(suite["test"], base.n_eval)

    def train_pairs(self, config: RMConfig):
        """The training pairs of `config` (its domains, n_train, seed and label noise)."""
        return reward_data.train_pairs(self.suite_train, config)

    def train(self, config: RMConfig) -> dict:
        """Train and evaluate one config on the shared features; the metrics of drostudy.runs."""
        pairs = self.train_pairs(config)
        return fast.run_cached(config, self.model, self.initial, self.features, pairs, self.test)
