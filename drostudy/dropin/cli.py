"""What the rm, dpo and rl commands take from a TRL user: their own preference data (`--dataset`), TRL's
training fields (`--trl-args KEY=VALUE,...`, parsed by HfArgumentParser on the Robust*Config, so names and
types are TRL's own) and the trained model or adapter saved beside metrics.json (`--save-model`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
GROUP_COLUMN = "domain"  # the optional column naming each pair's group (its domain)
FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_preferences(spec: str, split: str = "train"):
    """A preference dataset from a local JSONL/JSON/parquet file or a hub id: TRL's columns prompt, chosen,
    rejected (standard or conversational), and optionally `domain`. ValueError naming what is missing."""
    from datasets import load_dataset

    path = Path(spec)
    if path.suffix in FORMATS:
        if not path.is_file():
            raise ValueError(f"dataset file {spec!r} does not exist")
        data = load_dataset(FORMATS[path.suffix], data_files=str(path), split="train")
    elif path.exists():
        raise ValueError(f"dataset {spec!r}: expected a file ending in one of {sorted(FORMATS)}")
    else:
        data = load_dataset(spec, split=split)
    missing = [c for c in PREFERENCE_COLUMNS if c not in data.column_names]
    if missing:
        raise ValueError(
            f"dataset {spec!r} lacks the preference columns {missing}; it has {data.column_names}"
        )
    keep = [c for c in (*PREFERENCE_COLUMNS, GROUP_COLUMN) if c in data.column_names]
    return data.select_columns(keep)


def trl_overrides(config_cls: type, pairs: tuple[str, ...]) -> dict:
    """{field: value} of the TRL fields given as KEY=VALUE strings, parsed and typed by HfArgumentParser
    on `config_cls` (an unknown field or a bad value raises ValueError naming it)."""
    if (
        not pairs
    ):  # parsing builds TrainingArguments, which resets accelerate's global state: not for nothing
        return {}
    from transformers import HfArgumentParser

    fields = {f.name for f in dataclasses.fields(config_cls)}
    argv, keys = (
        ["--output_dir", "unused", "--use_cpu", "True", "--bf16", "False"],
        [],
    )  # parse on any machine
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"trl_args entries must be KEY=VALUE; got {pair!r}")
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in fields:  # checked here: argparse would accept an abbreviation
            raise ValueError(f"trl_args names a field {config_cls.__name__} does not have: {key!r}")
        argv += [f"--{key}", value]
        keys.append(key)
    try:
        parsed, extra = HfArgumentParser(config_cls).parse_args_into_dataclasses(
            argv, return_remaining_strings=True
        )
    except SystemExit as exc:  # argparse's way of saying a value is bad
        raise ValueError(
            f"trl_args {list(pairs)}: a value does not parse for {config_cls.__name__}"
        ) from exc
    if extra:
        raise ValueError(f"trl_args names fields {config_cls.__name__} does not have: {extra}")
    return {key: getattr(parsed, key) for key in keys}
