"""The cached-trunk fast DPO path against RobustDPOTrainer on the same batch: tokenisation, reference
log-probs, loss and LoRA gradients (float32, 1e-5), for ordinary DPO and robust/peer objectives."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from datasets import Dataset
from toy_pairs import chat_pairs, lora_grads
from transformers import LlamaForCausalLM

from drostudy import evaluate
from drostudy.dpo import fast, fast_run, fast_train
from drostudy.dpo.fast_train import FastDPORunConfig
from drostudy.dpo.run import trl_config
from drostudy.dpo.trainer import RobustDPOTrainer
from drostudy.models import _tiny_llama_config, smollm2_tokenizer
from drostudy.runs import lora_config

LAYERS, LORA_LAYERS = 4, 2
BETA = 0.5


def _rows(n: int = 8) -> list[dict]:
    """Pairs of different lengths (so the batch has padding) in two groups."""
    return chat_pairs(n, GROUP_KEY)


def _config(**kw) -> FastDPORunConfig:
    base = {"model": "tiny-llama", "lora_layers": LORA_LAYERS, "beta": BETA, "batch_size": 8}
    base |= {"max_length": 64, "steps": 1, "n_train": 8}
    return FastDPORunConfig(**(base | kw))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 4-layer tiny Llama in RobustDPOTrainer (LoRA on the top 2, B perturbed so that the policy differs
    from the reference) and the same 8 pairs as the trainer's collated batch and as fast-path pairs."""
    tok = smollm2_tokenizer()
    llama = _tiny_llama_config(tok)
    llama.num_hidden_layers = LAYERS
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama)
    config = _config()
    trainer = RobustDPOTrainer(
        model=model,
        args=trl_config(config, str(tmp_path_factory.mktemp("dpo"))),
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tok,
        peft_config=lora_config(config, LAYERS),
    )
    generator = torch.Generator().manual_seed(1)
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:  # LoRA starts at B = 0, where policy == reference and A gets no gradient
            param.data = 0.3 * torch.randn(param.shape, generator=generator)
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = trainer.data_collator(examples)
    pairs, kept = fast.encode_pairs(tok, _rows(), config.max_length)
    cache = fast.TrunkCache(trainer.model, LAYERS - LORA_LAYERS)
    return trainer, batch, pairs, kept, cache


GROUP_KEY = "group"  # the group column of RobustDPOConfig (group_column's default)
# RobustDPOConfig's robust fields with DRO off, so a test can switch the trainer's objective in place.
OFF = dict(divergence=None, radius=0.0, dro_method="worst_case", reg=None, group_step=None)


def _use(trainer, config: FastDPORunConfig) -> None:
    """Point `trainer` at `config`'s objective (its RobustDPOConfig fields), as a fresh trainer would be."""
    for name, value in (OFF | config.robust_fields()).items():
        setattr(trainer.args, name, value)
    trainer.loss_types = list(trainer.args.loss_type)
    trainer.loss_weights = [1.0] * len(trainer.loss_types)
    trainer.label_smoothing = trainer.args.label_smoothing


def test_encoding_matches_trls_tokenised_dataset(setup):
    trainer, _, pairs, kept, _ = setup
    assert kept == list(range(8))
    for row, (chosen, rejected) in zip(trainer.train_dataset, pairs, strict=True):
        assert chosen.start == rejected.start == len(row["prompt_ids"])
        assert list(chosen.ids) == row["prompt_ids"] + row["chosen_ids"]
        assert list(rejected.ids) == row["prompt_ids"] + row["rejected_ids"]


def test_reference_logps_match_trls_precomputed_ones(setup):
    _, batch, pairs, _, cache = setup
    ref_chosen, ref_rejected = cache.reference_logps(pairs)
    torch.testing.assert_close(ref_chosen, batch["ref_chosen_logps"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref_rejected, batch["ref_rejected_logps"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"loss": "ordinary"},
        {"loss": "robust", "divergence": "kl", "radius": 0.3},
        {"loss": "kldpo", "reg": 0.1},
    ],
)
def test_loss_and_lora_gradients_equal_the_trainers(setup, settings):
    trainer, batch, pairs, _, cache = setup
    config = _config(**settings)
    _use(trainer, config)
    trainer.model.train()
    expected_loss = trainer.compute_loss(trainer.model, dict(batch))
    expected_loss.backward()
    expected = lora_grads(trainer.model)
    logps = fast.pair_logps(trainer.model, cache, pairs)
    ref = (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    out, _ = fast_train.objective(config, logps, ref)
    out.loss.backward()
    got = lora_grads(trainer.model)
    assert float(out.loss.detach()) == pytest.approx(float(expected_loss.detach()), rel=1e-5)
    assert got.keys() == expected.keys() and len(got) == 7 * 2 * LORA_LAYERS  # A and B of 7 projections
    scale = max(float(g.abs().max()) for g in expected.values())
    assert scale > 1e-3  # the comparison would be vacuous on zero gradients
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


def test_frozen_trunk_is_computed_once_and_not_trained(setup):
    trainer, _, pairs, _, cache = setup
    cache.fill([s for p in pairs for s in p])
    size = len(cache)
    assert size == len({s.ids for p in pairs for s in p})
    fast.pair_logps(trainer.model, cache, pairs[:2])
    assert len(cache) == size
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    layers = {int(n.split("layers.")[1].split(".")[0]) for n in trainable}
    assert layers == set(range(cache.first, LAYERS))  # only the blocks above the cache train


def test_group_objective_moves_q_and_rdpo_is_trls(setup):
    trainer, batch, pairs, _, cache = setup
    ref = (batch["ref_chosen_logps"], batch["ref_rejected_logps"])
    for settings in ({"loss": "group_eg", "group_step": 2.0}, {"loss": "rdpo", "label_smoothing": 0.2}):
        config = _config(**settings)
        _use(trainer, config)
        trainer.group_q = torch.full((2,), 0.5, dtype=torch.float64)
        trainer.model.train()
        with torch.no_grad():
            expected = float(trainer.compute_loss(trainer.model, dict(batch)))
            logps = fast.pair_logps(trainer.model, cache, pairs)
            q = torch.full((2,), 0.5, dtype=torch.float64)
            out, q = fast_train.objective(config, logps, ref, batch[GROUP_KEY], q)
        assert float(out.loss) == pytest.approx(expected, rel=1e-5), config.loss
        if config.loss == "group_eg":
            torch.testing.assert_close(q, trainer.group_q, rtol=1e-5, atol=1e-8)
            assert abs(float(q[0]) - 0.5) > 1e-4  # the weights did move
    _use(trainer, _config())


def test_training_follows_the_trainers_trajectory(tmp_path):
    """Same LoRA init, same batch order (TRL's sampler), same optimiser: three steps give the same losses."""
    tok = smollm2_tokenizer()
    llama = _tiny_llama_config(tok)
    llama.num_hidden_layers = LAYERS
    torch.manual_seed(0)
    config = _config(loss="robust", divergence="chi2", radius=0.5, batch_size=3, steps=3, seed=2)
    config = dataclasses.replace(config, learning_rate=5e-2)  # large, so the steps move the losses
    trainer = RobustDPOTrainer(
        model=LlamaForCausalLM(llama),
        args=trl_config(config, str(tmp_path)),
        train_dataset=Dataset.from_list(_rows()),
        processing_class=tok,
        peft_config=lora_config(config, LAYERS),
    )
    twin = copy.deepcopy(trainer.model)
    trainer.train()
    expected = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    pairs, _ = fast.encode_pairs(tok, _rows(), config.max_length)
    cache = fast.TrunkCache(twin, LAYERS - LORA_LAYERS)
    history = fast_train.train(
        config, twin, cache, pairs, torch.tensor([r[GROUP_KEY] for r in _rows()]), False
    )
    got = [h["loss"] for h in history]
    assert len(got) == len(expected) == 3
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert abs(got[-1] - got[0]) > 1e-3  # the weights did move between the compared steps
    assert history[-1]["dro/max_weight"] > 1 / 3  # chi2 weights are not uniform


def test_cached_evaluation_equals_the_slow_evaluation(setup):
    trainer, _, pairs, _, cache = setup
    rows = _rows()
    prompts = [r["prompt"] for r in rows]
    model, tok = trainer.model, trainer.processing_class
    assert [p[0].ids for p in pairs] == [
        tuple(a + b) for a, b in evaluate.encode(tok, prompts, [r["chosen"] for r in rows])
    ]  # the slow evaluation splits these rows where TRL does
    chosen = evaluate.sequence_stats(model, tok, prompts, [r["chosen"] for r in rows])
    rejected = evaluate.sequence_stats(model, tok, prompts, [r["rejected"] for r in rows])
    expected = evaluate.preference_metrics(
        chosen["policy_logps"],
        rejected["policy_logps"],
        chosen["ref_logps"],
        rejected["ref_logps"],
        BETA,
    )
    got = fast_run.evaluate_pairs(model, cache, pairs, BETA, batch_size=3)
    assert abs(expected["margin"]) > 1e-3  # B was perturbed: the policy is not the reference
    assert got["accuracy"] == expected["accuracy"]
    assert got["margin"] == pytest.approx(expected["margin"], rel=1e-5, abs=1e-7)
    assert got["kl"] == pytest.approx(float(chosen["kl"].double().mean()), rel=1e-4)
    assert got["kl"] > 1e-4


def test_batch_order_covers_each_epoch_once():
    batches = fast_train.batch_order(8, 3, 6, seed=0)
    assert [len(b) for b in batches] == [3, 3, 2, 3, 3, 2]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(8))
    assert [b.tolist() for b in batches] == [b.tolist() for b in fast_train.batch_order(8, 3, 6, seed=0)]
    assert batches[0].tolist() != fast_train.batch_order(8, 3, 6, seed=1)[0].tolist()


def test_wdpo_config_is_validated():
    with pytest.raises(ValueError, match="wdpo_radius"):
        FastDPORunConfig(model="tiny-llama", wdpo_radius=-0.1)
    with pytest.raises(ValueError, match="needs loss 'ordinary'"):
        FastDPORunConfig(model="tiny-llama", wdpo_radius=0.1, loss="kldpo")
