"""Atomic results, resumable runs and seeding: what every training command and the sweep share."""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

METRICS_FILE = "metrics.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable: after a power cut the folder could otherwise show the old file."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory handles (Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the file itself was synced
    finally:
        os.close(fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON version of `atomic_write_text` (sorted keys, so reruns diff cleanly)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, (Path, tuple, set)):
        return str(obj) if isinstance(obj, Path) else list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def finished_run(out_dir: str | os.PathLike, config: dict) -> dict | None:
    """The metrics of a finished run in `out_dir` with this `config`, or None if it still has to run.

    A finished run with a *different* config is an error rather than a silent overwrite: results are never
    lost by reusing an output folder by mistake.
    """
    path = Path(out_dir) / METRICS_FILE
    if not path.exists():
        return None
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # unreadable (should not happen with atomic writes): treat as not finished
    # Round-trip through JSON so tuples and lists compare equal.
    if metrics.get("config") != json.loads(json.dumps(config, default=_json_default)):
        raise ValueError(
            f"out_dir {str(out_dir)!r} holds a finished run with another config; "
            "choose another --out or delete that folder"
        )
    return metrics


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and any GPU) from one integer."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cache_dir() -> Path:
    """Where built artefacts live (suite parquet, converted checkpoints): $DROSTUDY_CACHE or <repo>/.cache.

    Never committed: the set-up rebuilds it.
    """
    root = os.environ.get("DROSTUDY_CACHE")
    path = Path(root) if root else Path(__file__).resolve().parent.parent / ".cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


NUMBERED = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")  # the study's notebooks: NN_slug.ipynb


def notebooks_dir() -> Path:
    """<repo>/notebooks, found from the package location (as cache_dir finds <repo>/.cache)."""
    return Path(__file__).resolve().parent.parent / "notebooks"


def notebook_paths(root: str | os.PathLike | None = None) -> list[Path]:
    """The numbered notebooks `NN_slug.ipynb` of `root` (default: <repo>/notebooks), in order."""
    root = Path(root) if root is not None else notebooks_dir()
    return sorted(p for p in root.glob("*.ipynb") if NUMBERED.match(p.name))
