"""Hand-made schema rows and build folders for the corpus tests (tests/test_corpus_*.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
