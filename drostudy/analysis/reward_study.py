"""What notebook 02 trains on: the suite, the reward model and its frozen-feature cache, loaded once.

`RewardStudy(base, folder)` loads the suite, the model and the frozen-feature cache once; notebook 02's grid
(drostudy.analysis.reward_grid) trains each run on them through `train`.
"""

from __future__ import annotations

from pathlib import Path

from drostudy.reward import data as reward_data
from drostudy.reward import fast as reward_cached
from drostudy.reward.run import RMConfig


class RewardStudy:
    """Shared state of a grid of cached-engine runs: suite, model, pretrained top weights, feature cache.

    folder: where each run is written and resumed from (drostudy.runs.run_folder); None writes nothing.
    """

    def __init__(self, base: RMConfig, folder: str | Path | None = None):
        from drostudy.data import DOMAINS, load_suite

        self.base, self.folder, self.suite, self.domains = base, folder, load_suite(), DOMAINS
        self.model, self.tokenizer, self.initial = reward_cached.load_cached_model(base)
        self.features = reward_cached.FrozenFeatures(
            self.model, self.tokenizer, base.frozen_layers, base.max_length
        )
        self.test = reward_data.test_pairs(self.suite["test"], base.n_eval)
        self._trained = None  # the config the model's weights were last trained with

    def train_split(self, config: RMConfig):
        return reward_data.train_pairs(self.suite["train"], config)

    def train(self, config: RMConfig) -> dict:
        """Train and evaluate one config on the shared features (drostudy.reward.fast.run_cached)."""
        metrics = reward_cached.run_cached(
            config, self.model, self.initial, self.features, self.train_split(config), self.test
        )
        self._trained = config
        return metrics
