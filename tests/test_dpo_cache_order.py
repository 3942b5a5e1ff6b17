"""DPO's trunk cache is order independent: a sequence's cached states and reference log-probs, and so a whole
fast-path run, do not depend on what the cache held before (drostudy.dpo.fast.TrunkCache computes each
sequence alone; padded batches of the missing sequences made the last float32 digits depend on them). The
reference's states at the held-out completions are computed once and are the reference pass itself."""

import dataclasses

import pytest
import torch
from peft import get_peft_model

from drostudy.dpo import fast, fast_run, study
from drostudy.dpo.run import build_data
from drostudy.models import load_policy
from drostudy.runs import lora_config

SIZES = dataclasses.replace(study.PRESETS["smoke"], eval_domains=("reasoning",), n_eval=8)


def _config(seed: int):
    return study.base_config(SIZES, "math,code", beta=0.1, seed=seed)


@pytest.fixture(scope="module")
def model_and_pairs():
    """The tiny policy with LoRA (as a run builds it) and seed 0's training and held-out pairs."""
    config = _config(0)
    model, tokenizer = load_policy(config.model)
    train, test = build_data(config, tokenizer)
    layers = model.config.num_hidden_layers
    model = get_peft_model(model, lora_config(config, layers)).eval()
    pairs = fast.encode_pairs(tokenizer, train, None)[0]
    for rows in test.values():
        pairs += fast.encode_pairs(tokenizer, rows, None)[0]
    assert len({len(s.ids) for p in pairs for s in p}) > 4  # lengths differ: batches would pad
    return model, max(0, layers - config.lora_layers), pairs


def test_states_and_reference_do_not_depend_on_the_fill_order(model_and_pairs):
    model, first, pairs = model_and_pairs
    at_once = fast.TrunkCache(model, first)
    at_once.fill([s for p in pairs for s in p])
    reference = at_once.reference_logps(pairs)
    # another cache: a subset first (every third pair, reversed), then the rest in reverse order
    piecewise = fast.TrunkCache(model, first)
    subset = pairs[::3][::-1]
    piecewise.fill([s for p in subset for s in p])
    piecewise.reference_logps(subset)
    piecewise.fill([s for p in pairs[::-1] for s in p])
    assert set(piecewise._store) == set(at_once._store)
    for key, states in at_once._store.items():
        assert torch.equal(piecewise._store[key], states)
    for ours, theirs in zip(piecewise.reference_logps(pairs), reference, strict=True):
        assert torch.equal(ours, theirs)


def test_reference_states_are_the_reference_pass_and_kept_per_batch(model_and_pairs):
    model, first, pairs = model_and_pairs
    cache = fast.TrunkCache(model, first)
    chosen = [p[0] for p in pairs[:5]]
    with model.disable_adapter():
        direct = fast.completion_logits(model, cache.batch(chosen), first)
    lora_b = {n: w for n, w in model.named_parameters() if "lora_B" in n}
    saved = {n: w.detach().clone() for n, w in lora_b.items()}
    with torch.no_grad():  # move the adapters: the reference must not see them
        for weight in lora_b.values():
            weight.add_(0.5)
    states, rows = cache.reference_states(chosen)
    assert torch.equal(fast.lm_head(model)(states), direct[0]) and torch.equal(rows, direct[2])
    assert cache.reference_states(list(chosen)) is cache._reference_states[tuple(chosen)]  # kept
    assert not torch.equal(fast.completion_logits(model, cache.batch(chosen), first)[0], direct[0])
    with torch.no_grad():
        for name, weight in lora_b.items():
            weight.copy_(saved[name])


def _numbers(metrics: dict) -> tuple:
    """What a run measured: its per-domain metrics and its training history, without timings."""
    history = [{k: v for k, v in step.items() if not k.endswith("_s")} for step in metrics["history"]]
    return metrics["per_domain"], history


@pytest.mark.slow  # three tiny DPO runs
def test_a_run_does_not_depend_on_the_run_before_it():
    alone = fast_run.train_and_evaluate(_config(1), fast_run.TrunkCaches())
    shared = fast_run.TrunkCaches()
    before = fast_run.train_and_evaluate(_config(0), shared)  # other training pairs, same test pairs
    after = fast_run.train_and_evaluate(_config(1), shared)
    assert _numbers(after) == _numbers(alone)
    assert _numbers(before) != _numbers(alone)  # the runs differ, so the equality above says something
