"""Pre-flight check: every row of the training corpus is validated and encoded before the first step.

A schema error (or a row whose first exchange exceeds ``max_length``) found at step 40,000 wastes a day of
accelerator time; found here it stops the run in seconds with the row id and the reason. Rows are encoded
with a blank image of their size (text, labels and boxes are what can fail). The result is cached by the
corpus fingerprint (sha256 of the parquet files for a local folder, the ``datasets`` fingerprint otherwise)
and the encoder's identity, so an unchanged corpus is checked once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
from PIL import Image
from tqdm import tqdm

from builders.schema import validate
from builders.storage.datafolder import folder_fingerprint

from .data import CorpusSpec, Encode


def corpus_fingerprint(spec: CorpusSpec, rows: datasets.Dataset | datasets.IterableDataset) -> str | None:
    """The identity of the rows the run reads; ``None`` when it cannot be known without reading them all."""
    folder = spec.local_folder()
    if folder is not None:
        base = folder_fingerprint(folder)
    elif isinstance(rows, datasets.Dataset):
        base = rows._fingerprint
    else:
        return None
    selection = json.dumps([base, spec.name, spec.split, sorted(spec.tasks), spec.max_rows])
    return hashlib.sha256(selection.encode()).hexdigest()


def preflight(rows: datasets.Dataset | datasets.IterableDataset, fingerprint: str | None, cache_dir: Path,
              encode: Encode | None = None, encoder_key: str = "", show_progress: bool = True) -> int:
    """Validate (and, given ``encode``, encode) every row; return the row count.

    Raises ``SchemaError`` or ``ValueError`` naming the row. ``cache_dir/<key>.json`` records a corpus that
    passed with this encoder; such a corpus is not read again.
    """
    key = hashlib.sha256(f"{fingerprint}:{encoder_key}".encode()).hexdigest() if fingerprint else None
    marker = cache_dir / f"{key}.json" if key else None
    if marker is not None and marker.is_file():
        return int(json.loads(marker.read_text())["rows"])
    total = len(rows) if isinstance(rows, datasets.Dataset) else None
    count = 0
    for row in tqdm(rows, total=total, desc="pre-flight: checking rows", unit="row", disable=not show_progress):
        validate(row)
        if encode is not None:
            try:
                encode(row, Image.new("RGB", (row["width"], row["height"])))
            except ValueError as exc:  # the processor's RowInputError names the row and the limit
                raise ValueError(f"pre-flight: {exc} (raise architecture.max_length or drop the row)") from exc
        count += 1
    if marker is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"rows": count, "fingerprint": fingerprint}))
    return count
