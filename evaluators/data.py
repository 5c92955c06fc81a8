"""Where a task's rows come from: a built folder, a corpus folder, or a Hugging Face Hub dataset.

A task config's ``dataset`` block names one of

* ``path``: a folder written by ``gpt4roi build`` (``data/<split>-*.parquet``) or ``gpt4roi corpus``
  (``<config>/<split>-*.parquet``, with ``config``), relative to the run's ``data_root`` unless absolute;
* ``hub``: a Hub dataset id (``config`` optional), read with :func:`datasets.load_dataset`.

Rows are read with :func:`datasets.load_dataset` and the schema's features. The fingerprint of a folder is a
digest of its shards' bytes, so a rebuilt dataset never reuses cached answers of the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from builders.schema import FEATURES

from .protocol import files_digest

BUILD_DATA_DIR = "data"


def resolve_path(path: str | Path, data_root: str | Path | None) -> Path:
    """``path`` itself when absolute, else under ``data_root`` (or the working directory)."""
    path = Path(path).expanduser()
    if path.is_absolute() or data_root in (None, ""):
        return path
    return Path(data_root).expanduser() / path


def shard_paths(folder: Path, split: str, config: str | None = None) -> list[Path]:
    """The parquet shards of ``split`` in a build (``data/``) or corpus (``<config>/``) folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset folder {folder} does not exist (build it with `gpt4roi build` "
                                f"or set data_root)")
    data_dir = folder / (config or BUILD_DATA_DIR)
    shards = sorted(data_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].parquet"))
    if not shards:
        present = sorted({p.name.split("-")[0] for p in data_dir.glob("*.parquet")})
        raise FileNotFoundError(f"{data_dir}: no shards of split {split!r} (splits present: {present or 'none'})")
    return shards


def stat_digest(paths: list[Path]) -> str:
    """A cheap digest of ``paths`` by name, size and modification time (for large training splits)."""
    sha = hashlib.sha256()
    for path in paths:
        stat = path.stat()
        sha.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return sha.hexdigest()[:16]


def load_rows(dataset: Mapping[str, Any], data_root: str | Path | None, columns: list[str] | None = None
              ) -> tuple[list[dict[str, Any]], str]:
    """The rows of one split (only ``columns`` when given) and the dataset's fingerprint."""
    import datasets

    split = dataset["split"]
    if dataset.get("hub"):
        hub_id = dataset["hub"]
        loaded = datasets.load_dataset(hub_id, dataset.get("config"), split=split)
        fingerprint = f"{hub_id}:{dataset.get('config')}:{split}:{loaded._fingerprint}"
    else:
        if not dataset.get("path"):
            raise ValueError("a task's dataset needs `path` (a built folder) or `hub` (a Hub dataset id)")
        folder = resolve_path(dataset["path"], data_root)
        shards = shard_paths(folder, split, dataset.get("config"))
        loaded = datasets.load_dataset("parquet", data_files={split: [str(p) for p in shards]}, split=split,
                                       features=FEATURES)
        fingerprint = files_digest(shards) if columns is None else stat_digest(shards)
    if columns is not None:
        loaded = loaded.select_columns(columns)
    return loaded.to_list(), fingerprint
