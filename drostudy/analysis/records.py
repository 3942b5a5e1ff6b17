"""A notebook's record: `results/NN_slug.json` (its scalars: conclusions, comparisons, timings, parameters)
and `results/NN_slug.runs.json` (its per-run bulk). The first is committed with the study's findings
(small, diffable); the second is rebuilt by `make study` and read back by the analyses (notebook 05)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from drostudy.io import atomic_write_json

# Per-run bulk of a notebook's record (every run's metrics and histories, 02's per-pair test margins): kept in
# NN_slug.runs.json beside the scalar NN_slug.json, so that the committed results stay small (a few hundred
# kB) while the study's analyses still read every run.
BULK_KEYS = ("runs", "test_margins")
BULK_SUFFIX = ".runs.json"


def write_record(path: str | os.PathLike, record: dict) -> Path:
    """Write a notebook's record: its scalars to `path` (NN_slug.json, committed with the study's results) and
    its `BULK_KEYS` to NN_slug.runs.json (never committed; `make study` rebuilds it), each atomically."""
    path = Path(path)
    bulk = {k: record[k] for k in BULK_KEYS if k in record}
    bulk_path = path.with_name(path.stem + BULK_SUFFIX)
    if bulk:
        atomic_write_json(bulk_path, bulk)
    else:
        bulk_path.unlink(missing_ok=True)  # an older record's bulk must not be read with this one
    atomic_write_json(path, {k: v for k, v in record.items() if k not in bulk})
    return path


def read_record(path: str | os.PathLike) -> dict:
    """A notebook's record as `write_record` was given it: NN_slug.json with its NN_slug.runs.json (if any)."""
    path = Path(path)
    record = json.loads(path.read_text())
    bulk_path = path.with_name(path.stem + BULK_SUFFIX)
    if bulk_path.exists():
        record.update(json.loads(bulk_path.read_text()))
    return record


def record_files(folder: str | os.PathLike, pattern: str = "*.json") -> list[Path]:
    """The notebook records under `folder` matching `pattern`, without their bulk companions."""
    return [p for p in sorted(Path(folder).glob(pattern)) if not p.name.endswith(BULK_SUFFIX)]
