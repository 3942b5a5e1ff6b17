"""Model loading: tiny models (fast, every run), build-once caching, name checks, real models (slow)."""

import time

import pytest
import torch

from drostudy import models, packaged
from drostudy.io import cache_dir


def test_tiny_policy_forward_backward_and_vocab_matches_tokenizer():
    start = time.perf_counter()
    model, tok = models.tiny_policy(seed=0)
    assert time.perf_counter() - start < 10  # ~0.4 s idle; generous for busy shared cores
    assert model.config.vocab_size == len(tok) == 49152
    assert tok.pad_token == "<|endoftext|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"
    batch = tok(["What is 2+2?", "Write a haiku about rain, please."], return_tensors="pt", padding=True)
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert torch.isfinite(out.loss)


def test_tiny_policy_is_deterministic_in_seed():
    a, _ = models.tiny_policy(seed=3)
    b, _ = models.tiny_policy(seed=3)
    c, _ = models.tiny_policy(seed=4)
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_tiny_reward_model_scores_pairs_with_scalar_head(family):
    model, tok = models.tiny_reward_model(seed=0, family=family)
    assert model.config.num_labels == 1 and model.config.vocab_size == len(tok)
    assert tok.eos_token is not None and tok.pad_token is not None  # what TRL's RewardTrainer needs
    batch = tok(
        ["prompt one answer", "a much longer second prompt and its answer"],
        return_tensors="pt",
        padding=True,
    )
    rewards = model(**batch).logits
    assert rewards.shape == (2, 1)
    (rewards[0] - rewards[1]).sum().backward()
    assert model.config.pad_token_id == tok.pad_token_id


def test_tiny_names_load_through_the_public_loaders():
    policy, ptok = models.load_policy("tiny-llama")
    rm, rtok = models.load_reward_model("tiny-bert")
    rm_llama, _ = models.load_reward_model("tiny-llama", num_labels=3)
    assert type(policy).__name__ == "LlamaForCausalLM" and ptok.eos_token == "<|im_end|>"
    assert type(rm).__name__ == "BertForSequenceClassification" and rtok.eos_token == rtok.sep_token
    assert (
        type(rm_llama).__name__ == "LlamaForSequenceClassification" and rm_llama.config.num_labels == 3
    )
    assert set(models.POLICIES) <= set(models.POLICIES + models.REWARD_MODELS)
    assert "smollm2-135m-instruct" in models.POLICIES and "minilm-l6" in models.REWARD_MODELS


def test_tiny_tokenizers_load_fast_offline():
    models.smollm2_tokenizer()  # a fresh checkout builds the cached copy from the GGUF once (~3 s)
    start = time.perf_counter()
    smol, minilm = models.smollm2_tokenizer(), models.minilm_tokenizer()
    assert time.perf_counter() - start < 10  # ~0.25 s idle (the GGUF parse alone takes ~3 s)
    assert (cache_dir() / "tokenizers" / models.SMOLLM2 / "drostudy-done.json").exists()
    assert smol.is_fast and minilm.is_fast
    assert len(smol) == 49152 and len(minilm) == 30522
    assert minilm.model_max_length == 256
    assert "<|im_start|>assistant" in smol.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


@pytest.mark.parametrize("loader", [models.load_policy, models.load_reward_model])
def test_unknown_name_lists_known_names(loader):
    with pytest.raises(ValueError, match="smollm2-135m-instruct") as err:
        loader("gpt-17-ultra")
    assert "tiny-llama" in str(err.value)


def test_hub_id_while_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelOfflineError, match="offline") as err:
        models.load_reward_model("some-org/not-a-cached-model")
    assert "minilm-l6" in str(err.value)


def test_local_folder_passes_through_to_transformers(tmp_path):
    model, tok = models.tiny_reward_model(seed=1, family="llama")
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    loaded, loaded_tok = models.load_reward_model(str(tmp_path / "rm"))
    assert torch.equal(loaded.score.weight, model.score.weight)
    assert loaded.config.pad_token_id == loaded_tok.pad_token_id == tok.pad_token_id


def test_build_once_is_atomic_and_builds_once(tmp_path):
    target = tmp_path / "thing"
    calls = []

    def broken(folder):
        (folder / "half.bin").write_text("partial")
        raise KeyboardInterrupt  # interrupted half-way

    with pytest.raises(KeyboardInterrupt):
        packaged.build_once(target, broken)
    assert not target.exists() and list(tmp_path.iterdir()) == []  # no partial target, no temp left

    def good(folder):
        calls.append(folder)
        (folder / "weights.bin").write_text("ok")

    assert packaged.build_once(target, good) == target
    assert packaged.build_once(target, good) == target
    assert len(calls) == 1 and (target / "weights.bin").read_text() == "ok"
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]


def test_build_once_replaces_an_incomplete_folder(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    (target / "stale.bin").write_text("from an older interrupted run")
    packaged.build_once(target, lambda folder: (folder / "new.bin").write_text("ok"))
    assert sorted(p.name for p in target.iterdir()) == ["drostudy-done.json", "new.bin"]


def test_build_once_keeps_a_folder_another_process_completed_first(tmp_path):
    """Two ranks building at once: the one that finishes second must not replace the folder the first
    may be reading."""
    target = tmp_path / "thing"

    def slower(folder):
        (folder / "mine.bin").write_text("second")
        # meanwhile another process completes its build and renames it into place
        packaged.build_once(target, lambda other: (other / "theirs.bin").write_text("first"))

    assert packaged.build_once(target, slower) == target
    assert sorted(p.name for p in target.iterdir()) == ["drostudy-done.json", "theirs.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["thing"]  # the slower build's temp folder is gone


@pytest.mark.slow
def test_smollm2_policy_converts_once_then_loads_fast_and_answers():
    models.load_policy()  # converts on a fresh checkout (~20 s), else a cached load
    start = time.perf_counter()
    model, tok = models.load_policy()
    assert time.perf_counter() - start < 10  # ~0.2 s idle: the cached fp32 checkpoint, not the GGUF
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "4" in answer


@pytest.mark.slow
def test_minilm_reward_model_scores_two_texts():
    model, tok = models.load_reward_model("minilm-l6")
    assert type(model).__name__ == "BertForSequenceClassification" and model.config.num_labels == 1
    assert tok.eos_token == tok.sep_token == "[SEP]"
    texts = ["What is 2+2? [SEP] 4", "What is 2+2? [SEP] The capital of France is Paris."]
    with torch.no_grad():
        rewards = model(**tok(texts, return_tensors="pt", padding=True)).logits
    assert rewards.shape == (2, 1) and torch.isfinite(rewards).all() and rewards[0] != rewards[1]


@pytest.mark.slow
def test_smollm2_reward_model_has_a_scalar_head_and_pad_id():
    model, tok = models.load_reward_model("smollm2-135m-instruct")
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id == tok.pad_token_id != tok.eos_token_id
    with torch.no_grad():
        rewards = model(
            **tok(["hi<|im_end|>", "hello there<|im_end|>"], return_tensors="pt", padding=True)
        ).logits
    assert rewards.shape == (2, 1) and torch.isfinite(rewards).all()
