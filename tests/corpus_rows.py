"""Hand-made schema rows and build folders, and readers of what a build left behind, shared by the tests.

The corpus tests (tests/test_corpus_*.py) write builds from hand-made rows; the builder and synthetic-world
tests read the rows of real builds back and check that a failed build leaves no folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from builders.schema import validate
from builders.storage.output import ShardedParquetWriter


def schema_row(source: str, split: str, key: str, *, image: str, image_id: str, boxes: list[list[float]],
               width: int = 640, height: int = 480, meta: dict[str, Any] | None = None, task: str = "region_caption",
               question: str = "Describe", answer: str = "a thing", variant: str = "") -> dict[str, Any]:
    """A valid row: one human turn naming every box, one answer."""
    refs = " and ".join(f"<region{k}>" for k in range(1, len(boxes) + 1))
    row = {
        "id": f"{source}:{split}:{key}", "source": source, "variant": variant, "task": task, "split": split,
        "image": image, "image_id": image_id, "width": width, "height": height,
        "regions": [{"bbox": [float(v) for v in box], "segmentation": "", "label": f"obj{k}", "source_id": str(k)}
                    for k, box in enumerate(boxes)],
        "conversations": [{"from": "human", "value": f"<image>\n{question} {refs}."},
                          {"from": "gpt", "value": answer}],
        "choices": [], "label": -1, "references": [], "meta": json.dumps(meta or {}),
    }
    validate(row)
    return row


def write_build(folder: Path, rows: list[dict[str, Any]], *, source: str = "x", seed: int = 0,
                options: dict[str, Any] | None = None) -> Path:
    """A folder in the ``gpt4roi build`` layout: data/<split>-*.parquet + build_report.json."""
    by_split: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_split.setdefault(row["split"], []).append(row)
    for split, split_rows in by_split.items():
        writer = ShardedParquetWriter(folder / "data", split)
        writer.write_all(split_rows)
        writer.close()
    (folder / "build_report.json").write_text(json.dumps({"source": source, "seed": seed,
                                                          "options": options or {}, "inputs": []}))
    return folder


def built_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of a build folder, all splits, in shard-name order (read with pyarrow, no datasets cache)."""
    return [row for shard in sorted((folder / "data").glob("*.parquet")) for row in pq.read_table(shard).to_pylist()]


def rows_by_id(folder: Path, split: str) -> dict[str, dict[str, Any]]:
    """One split of a build folder, loaded the way users load it (``datasets.load_dataset``), by row id."""
    return {row["id"]: row for row in datasets.load_dataset(str(folder), split=split)}


def no_output_left(out: Path) -> bool:
    """A failed build left neither its output folder nor the hidden temporary folder it writes first."""
    return not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))
