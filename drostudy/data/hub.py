"""Real preference datasets from the Hugging Face hub, mapped onto the study's columns (needs a network).

`load_hub_dataset(name)` loads `unified-feedback`, `reward-bench` or `hhh-alignment` (the table of
drostudy.data.hub_rows, which maps their rows: what is kept, what is dropped and why). Every drop is
counted and logged (`logging` WARNING).

With HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 and nothing in the local datasets cache, a loader raises
`DatasetOfflineError` at once instead of calling the hub; use the offline suite `drostudy.data.load_suite()`.
`data_files=` (json, jsonl or parquet files in the hub layout) works offline and is what the tests use; `split`
then does not apply (all rows of the files are read).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import datasets

from drostudy.data.hub_rows import (
    COLUMNS,
    HHH_ALIGNMENT,
    HHH_SUBSETS,
    REWARD_BENCH,
    UNIFIED_FEEDBACK,
    hhh_pairs,
    map_rows,
    reward_bench_pair,
    unified_feedback_pair,
)
from drostudy.progress import tqdm

logger = logging.getLogger(__name__)


class DatasetOfflineError(ConnectionError):
    """A hub dataset was asked for while the hub is offline and the dataset is not in the local cache."""


def load_unified_feedback(
    config: str = "all", split: str | None = None, data_files=None, max_rows: int | None = None
) -> datasets.Dataset:
    """Unified-Feedback (`config` "all" or one origin, e.g. "hh-rlhf"; split "train" or "val")."""
    raw = _load_raw(UNIFIED_FEEDBACK, split or "train", data_files, max_rows, name=config)
    return _finish("unified-feedback", raw, lambda row, _: [unified_feedback_pair(row)])


def load_reward_bench(split: str | None = None, data_files=None, max_rows: int | None = None):
    """RewardBench v1 (split "filtered": the 2,985 scored pairs; "raw": everything before filtering)."""
    raw = _load_raw(REWARD_BENCH, split or "filtered", data_files, max_rows)
    return _finish("reward-bench", raw, lambda row, _: [reward_bench_pair(row)])


def load_hhh_alignment(
    split: str | None = None,
    data_files=None,
    max_rows: int | None = None,
    subsets: tuple[str, ...] = HHH_SUBSETS,
) -> datasets.Dataset:
    """HHH-Alignment (221 rows, split "test") over `subsets`.

    Its rows do not say their subset, so local `data_files` is a dict {subset: file(s)}, or a file when
    exactly one subset is asked for. From the hub it reads the parquet export (the repo's loading script no
    longer runs under datasets >= 4).
    """
    bad = [s for s in subsets if s not in HHH_SUBSETS]
    if bad or not subsets:
        raise ValueError(f"unknown subsets {bad!r}; expected some of {list(HHH_SUBSETS)}")
    if data_files is not None and not isinstance(data_files, dict):
        if len(subsets) != 1:
            raise ValueError(
                "data_files must be a dict {subset: file(s)} unless exactly one subset is given"
            )
        data_files = {subsets[0]: data_files}
    parts = []
    for subset in subsets:
        if data_files is not None and subset not in data_files:
            continue
        files = None if data_files is None else data_files[subset]
        hub_kw = {"data_dir": subset, "revision": "refs/convert/parquet"} if files is None else {}
        raw = _load_raw(HHH_ALIGNMENT, split or "test", files, max_rows, **hub_kw)
        parts.append(
            _finish(f"hhh-alignment/{subset}", raw, lambda row, i, s=subset: hhh_pairs(row, s, i))
        )
    if not parts:
        raise ValueError(f"data_files names none of the subsets {list(subsets)}")
    return datasets.concatenate_datasets(parts)


HUB_DATASETS: dict[str, Callable[..., datasets.Dataset]] = {
    "unified-feedback": load_unified_feedback,
    "reward-bench": load_reward_bench,
    "hhh-alignment": load_hhh_alignment,
}
_REPO_NAMES = {
    UNIFIED_FEEDBACK: "unified-feedback",
    REWARD_BENCH: "reward-bench",
    HHH_ALIGNMENT: "hhh-alignment",
}


def load_hub_dataset(name: str, split: str | None = None, data_files=None, **kw) -> datasets.Dataset:
    """Load a hub preference dataset by short name or repo id, in the study's columns (see module doc).

    `kw` goes to the dataset's own loader (`max_rows`, Unified-Feedback's `config`, HHH's `subsets`).
    """
    name = _REPO_NAMES.get(name, name)
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub dataset {name!r}; expected one of {sorted(HUB_DATASETS)}")
    return HUB_DATASETS[name](split=split, data_files=data_files, **kw)


def _load_raw(repo: str, split: str, data_files, max_rows: int | None, **hub_kw) -> datasets.Dataset:
    """The raw rows: from local `data_files` (json/jsonl/parquet by extension) or from the hub."""
    if data_files is not None:
        raw = datasets.load_dataset(_builder(data_files), data_files=data_files, split="train")
    else:
        if hub_offline() and not _in_datasets_cache(repo):
            raise DatasetOfflineError(
                f"cannot load {repo!r}: the hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the "
                "dataset is not in the local datasets cache. Use the offline suite "
                "drostudy.data.load_suite() instead, or pass data_files= with local copies of its files."
            )
        try:
            raw = datasets.load_dataset(repo, split=split, **hub_kw)
        except ConnectionError as err:
            raise DatasetOfflineError(
                f"cannot reach {repo!r} on the hub ({err}); use drostudy.data.load_suite() offline"
            ) from err
    return raw.select(range(min(max_rows, len(raw)))) if max_rows is not None else raw


def _builder(data_files) -> str:
    files = data_files if isinstance(data_files, (list, tuple)) else [data_files]
    if isinstance(data_files, dict):
        files = [f for v in data_files.values() for f in (v if isinstance(v, (list, tuple)) else [v])]
    suffixes = {Path(str(f)).suffix.lower() for f in files}
    builders = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if len(suffixes) != 1 or next(iter(suffixes)) not in builders:
        raise ValueError(
            f"unsupported data_files suffixes {sorted(suffixes)}; expected one of {list(builders)}"
        )
    return builders[next(iter(suffixes))]


def _finish(label: str, raw: datasets.Dataset, pair_fn) -> datasets.Dataset:
    rows = tqdm(
        raw, desc=label, unit="row", disable=len(raw) < 20_000
    )  # a bar only where it takes a while
    kept, counts = map_rows(rows, pair_fn)
    dropped = {reason: n for reason, n in sorted(counts.items()) if reason != "kept"}
    message = f"{label}: kept {counts['kept']} pairs from {len(raw)} rows; dropped {dropped or 'none'}"
    (logger.warning if dropped else logger.info)(message)
    columns = {c: [row[c] for row in kept] for c in COLUMNS}
    return datasets.Dataset.from_dict(columns, features=datasets.Features(dict.fromkeys(COLUMNS, _STR)))


_STR = datasets.Value("string")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set (checked now, not at import time)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("HF_DATASETS_OFFLINE", ""))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


def _in_datasets_cache(repo: str) -> bool:
    # datasets caches a hub dataset under <HF_DATASETS_CACHE>/<org>___<name>
    return (Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___")).exists()
