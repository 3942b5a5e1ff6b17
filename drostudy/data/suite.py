"""The cached suite: build once, load in well under a second, rebuild when stale or corrupt; select and mix.

Cache layout (under cache_dir() / "suite"): train.parquet, test.parquet and manifest.json holding the build
parameters, a fingerprint of the code that builds the suite, the evals version and the parquet files'
sha256. Anything that does not match is rebuilt, never silently used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drostudy.data.build import COLUMNS, DOMAINS, BuildConfig, _allocate, build_rows
from drostudy.io import atomic_write_json, cache_dir

log = logging.getLogger(__name__)
PARTS = ("train", "test")  # the suite's two parts (the splits of its DatasetDict)
MANIFEST = "manifest.json"
_CODE = ("build.py", "sources.py", "wrong_answers.py", "responses.py", "templates.py", "suite.py")


def fingerprint() -> str:
    """sha256 of the modules that decide the suite's content: editing any of them invalidates the cache."""
    digest = hashlib.sha256()
    for name in _CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_manifest(config: BuildConfig) -> dict:
    return {
        "params": config.params(),
        "fingerprint": fingerprint(),
        "evals_version": importlib.metadata.version("evals"),
    }


def cache_problem(folder: Path, config: BuildConfig) -> str | None:
    """Why the cache in `folder` cannot be used for `config` (None: it can)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return "no cache"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "unreadable manifest"
    for key, value in _expected_manifest(config).items():
        if manifest.get(key) != value:
            return f"stale cache ({key} differs)"
    for split in PARTS:
        path = folder / f"{split}.parquet"
        if not path.exists() or _sha256(path) != manifest.get("files", {}).get(path.name):
            return f"corrupt cache ({path.name} missing or changed)"
    return None


def build_suite(config: BuildConfig, folder: Path) -> dict:
    """Build the suite for `config` into `folder` (parquet + manifest); returns the manifest."""
    start = time.perf_counter()
    splits = build_rows(config)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        rows, dropped = validate_rows(rows)
        for report in dropped:
            log.warning("dropped pair %s: %s", report["id"], report["reason"])
        table = pa.Table.from_pandas(pd.DataFrame(rows, columns=list(COLUMNS)), preserve_index=False)
        tmp = folder / f".{split}.{os.getpid()}.parquet.tmp"  # concurrent builds never share a temp file
        pq.write_table(table, tmp)
        tmp.replace(folder / f"{split}.parquet")
        files[f"{split}.parquet"] = _sha256(folder / f"{split}.parquet")
        if dropped:
            log.warning("%s: dropped %d malformed pairs", split, len(dropped))
    manifest = {
        **_expected_manifest(config),
        "files": files,
        "build_seconds": time.perf_counter() - start,
    }
    atomic_write_json(
        folder / MANIFEST, manifest
    )  # written last: a build cut short leaves no valid manifest
    return manifest


def load_suite(
    rebuild: bool = False, folder: str | Path | None = None, **build_params
) -> datasets.DatasetDict:
    """The suite as a DatasetDict with splits "train" and "test" (columns: see COLUMNS).

    Built on first use (or when `rebuild`, or when the cache is stale or corrupt) into
    `folder` (default cache_dir() / "suite"); `build_params` are BuildConfig fields (seed, per_domain, ...).
    """
    config = BuildConfig(**build_params)
    folder = Path(folder) if folder is not None else cache_dir() / "suite"
    problem = "rebuild requested" if rebuild else cache_problem(folder, config)
    if problem:
        log.info("building the suite in %s (%s)", folder, problem)
        build_suite(config, folder)
    return datasets.DatasetDict(
        {split: datasets.Dataset(pq.read_table(folder / f"{split}.parquet")) for split in PARTS}
    )


def _check_domains(names: Iterable[str], known: Iterable[str]) -> None:
    known = sorted(set(known))
    for name in names:
        if name not in known:
            raise ValueError(f"unknown domain {name!r}; expected one of {known}")


def select(
    ds: datasets.Dataset,
    domains: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    proportions: dict[str, float] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> datasets.Dataset:
    """Rows of `ds` from `domains` (and `kinds`), mixed in `proportions` over domains, `n` rows in all.

    proportions: {domain: weight}, normalised; without it the domains keep their natural shares. n defaults
    to all selected rows, or, with proportions, the most rows the scarcest domain allows. Sampling is without
    replacement and the result is shuffled (deterministic in `seed`). Asking for more rows of a domain than
    exist raises ValueError.
    """
    frame = ds.select_columns(["domain", "kind"]).to_pandas()
    known = set(DOMAINS) | set(frame["domain"])
    if proportions is not None:
        domains = list(proportions) if domains is None else list(domains)
        _check_domains(proportions, domains)
    domains = list(domains) if domains is not None else sorted(set(frame["domain"]))
    _check_domains(domains, known)
    mask = frame["domain"].isin(domains)
    if kinds is not None:
        kinds = list(kinds)
        unknown = sorted(set(kinds) - set(frame["kind"]))
        if unknown:
            raise ValueError(
                f"unknown kind {unknown[0]!r}; expected one of {sorted(set(frame['kind']))}"
            )
        mask &= frame["kind"].isin(kinds)
    rng = np.random.default_rng(seed)
    index = np.flatnonzero(mask.to_numpy())
    if proportions is None:
        if n is not None and n > len(index):
            raise ValueError(f"n={n} but only {len(index)} rows match")
        return ds.select(rng.permutation(index)[: len(index) if n is None else n])
    weights = {d: float(w) for d, w in proportions.items() if w > 0}
    if not weights:
        raise ValueError("proportions must give some domain a positive weight")
    pools = {d: index[frame["domain"].to_numpy()[index] == d] for d in weights}
    total = sum(weights.values())
    if n is None:
        n = int(min(len(pools[d]) * total / w for d, w in weights.items()))
    counts = _allocate(n, weights)
    picked = []
    for d, count in counts.items():
        if count > len(pools[d]):
            raise ValueError(f"domain {d!r}: {count} rows asked, {len(pools[d])} available")
        picked.append(rng.permutation(pools[d])[:count])
    return ds.select(rng.permutation(np.concatenate(picked)))


def describe(suite: datasets.DatasetDict | None = None) -> pd.DataFrame:
    """Pair counts by domain and kind (rows) and split (columns), with totals; loads the suite if None."""
    suite = load_suite() if suite is None else suite
    frames = [suite[s].select_columns(["domain", "kind"]).to_pandas().assign(split=s) for s in suite]
    table = pd.concat(frames).pivot_table(
        index=["domain", "kind"], columns="split", aggfunc="size", fill_value=0
    )
    table = table.reindex(columns=[s for s in PARTS if s in table.columns])
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table


def validate_rows(rows, known_domains: Iterable[str] | None = DOMAINS, strict: bool = False):
    """(clean rows, dropped) for preference rows (dicts, a DataFrame or a Dataset).

    A row is malformed when a column of COLUMNS is missing, the prompt or a response is empty,
    chosen == rejected, or its domain is not in `known_domains` (None: any domain). `dropped` lists
    {"id", "reason"} per malformed row. strict=True (for data a user supplies) raises ValueError naming them.
    """
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    known = None if known_domains is None else set(known_domains)
    clean, dropped = [], []
    for i, row in enumerate(rows):
        row = dict(row)
        missing = [c for c in COLUMNS if c not in row or row[c] is None]
        reason = None
        if missing:
            reason = f"missing column {missing[0]!r}"
        elif any(not str(row[c]).strip() for c in ("prompt", "chosen", "rejected")):
            reason = "empty prompt or response"
        elif str(row["chosen"]).strip() == str(row["rejected"]).strip():
            reason = "chosen == rejected"
        elif known is not None and row["domain"] not in known:
            reason = f"unknown domain {row['domain']!r}; expected one of {sorted(known)}"
        if reason is None:
            clean.append(row)
        else:
            dropped.append({"id": row.get("id", f"row {i}"), "reason": reason})
    if strict and dropped:
        shown = "; ".join(f"{d['id']}: {d['reason']}" for d in dropped[:5])
        raise ValueError(f"{len(dropped)} malformed preference rows ({shown})")
    return clean, dropped
