"""The two reward-model training loops train the same model: RobustRewardTrainer (TRL, whole model) and
train_on_cache (cached frozen layers) give the same per-step losses and parameters over one epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import ClassLabel

from drostudy.models import load_reward_model
from drostudy.reward import data as reward_data
from drostudy.reward import fast
from drostudy.reward.objective import freeze_lower_layers
from drostudy.reward.run import RMConfig
from drostudy.reward.trainer import RobustRewardTrainer, trl_args
from tests.test_reward_trainer import DOMAINS, toy_pairs

FROZEN = 1  # of tiny-bert's 2 layers: the cached path runs the top block, the pooler and the head


def tiny_top(seed: int = 0):
    """tiny-bert with its embeddings and lower block frozen and dropout off (as both paths run it), in float64.

    float64 because Adam normalises each step: a gradient entry that is ~0 (the key bias, which softmax
    ignores) gets a step of up to lr from float32 rounding alone, different on two equal computations.
    """
    torch.manual_seed(seed)
    model, tok = load_reward_model("tiny-bert")
    freeze_lower_layers(model, FROZEN)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.double(), tok


class RecordingTrainer(RobustRewardTrainer):
    """Keeps the exact loss of every training step (TRL's log rounds it)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.step_losses = [*getattr(self, "step_losses", []), float(loss.detach())]
        return loss


def trained(config: RMConfig, tmp_path):
    """(cached path's step losses, TRL path's, the two models) after one epoch on the same batches."""
    pairs = toy_pairs(16)
    cached_model, tok = tiny_top()
    chosen, rejected = fast.FrozenFeatures(cached_model, tok, FROZEN, 48).pairs(pairs)
    history, _ = fast.train_on_cache(config, cached_model, pairs, chosen, rejected)
    # train_on_cache's batches are the slices of this permutation; TRL reads the permuted pairs in order
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(config.seed))
    trl_model, tok = tiny_top()
    trainer = RecordingTrainer(
        model=trl_model,
        args=trl_args(config, str(tmp_path), optim="adamw_torch", train_sampling_strategy="sequential"),
        train_dataset=reward_data.tokenize_pairs(
            pairs.select(order.tolist()), tok, 48, DOMAINS
        ).cast_column("group", ClassLabel(names=list(DOMAINS))),
        processing_class=tok,
    )
    trainer.train()
    return [row["loss"] for row in history], trainer.step_losses, cached_model, trl_model


@pytest.mark.parametrize(
    "divergence,radius,level", [("tv", 0.0, "example"), ("tv", 0.4, "example"), ("kl", 1.0, "group")]
)
def test_one_epoch_same_losses_and_parameters(tmp_path, divergence, radius, level):
    config = RMConfig(
        train_domains=DOMAINS,
        eval_domains=DOMAINS,
        batch_size=4,
        learning_rate=1e-2,
        divergence=divergence,
        radius=radius,
        level=level,
        frozen_layers=FROZEN,
        steps=4,  # one pass over the 16 pairs
        logging_steps=1,
    )
    cached_losses, trl_losses, cached_model, trl_model = trained(config, tmp_path)
    assert len(cached_losses) == len(trl_losses) == 4  # 16 pairs, batch 4
    np.testing.assert_allclose(cached_losses, trl_losses, rtol=0, atol=1e-5)
    initial = tiny_top()[0]
    moved = 0.0
    for (name, a), (_, b) in zip(
        cached_model.named_parameters(), trl_model.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)
        moved = max(moved, float((a - initial.get_parameter(name)).abs().max()))
    assert moved > 1e-3  # training moved the parameters: the equality is not vacuous
