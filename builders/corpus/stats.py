"""Statistics of a corpus per dataset config and task, accumulated from Arrow tables as they are written.

Collected in the writing pass (vectorised over each table, no per-row Python) so that the card costs no
second read: rows, regions per row, turns, whitespace-separated words of all turns, box area relative to the
image, box aspect ratio, and COCO's small / medium / large area classes (32² and 96² pixels).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Histogram bins: regions per row (0..63, then 64+), log10 relative area, log2 aspect (w/h).
REGION_BINS = 65
AREA_EDGES = np.linspace(-5.0, 0.0, 26)
ASPECT_EDGES = np.linspace(-4.125, 4.125, 34)  # bins centred on 0 (square boxes), 0.25 wide
COCO_SMALL, COCO_MEDIUM = 32.0 ** 2, 96.0 ** 2
AREA_CLASSES = ("<1%", "1-10%", "10-50%", ">=50%")


@dataclass
class Stats:
    """Running totals and histograms of one (config, task)."""

    rows: int = 0
    regions: int = 0
    max_regions: int = 0
    turns: int = 0
    words: int = 0
    regions_hist: np.ndarray = field(default_factory=lambda: np.zeros(REGION_BINS, dtype=np.int64))
    area_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(AREA_EDGES) - 1, dtype=np.int64))
    aspect_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(ASPECT_EDGES) - 1, dtype=np.int64))
    area_classes: np.ndarray = field(default_factory=lambda: np.zeros(len(AREA_CLASSES), dtype=np.int64))
    coco_sizes: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.int64))

    def merge(self, other: Stats) -> None:
        self.rows += other.rows
        self.regions += other.regions
        self.max_regions = max(self.max_regions, other.max_regions)
        self.turns += other.turns
        self.words += other.words
        for name in ("regions_hist", "area_hist", "aspect_hist", "area_classes", "coco_sizes"):
            getattr(self, name).__iadd__(getattr(other, name))

    def summary(self) -> dict[str, Any]:
        boxes = max(int(self.area_classes.sum()), 1)
        coco = max(int(self.coco_sizes.sum()), 1)
        return {
            "rows": self.rows,
            "regions": self.regions,
            "regions_per_row": round(self.regions / self.rows, 2) if self.rows else 0.0,
            "max_regions_per_row": self.max_regions,
            "turns_per_row": round(self.turns / self.rows, 2) if self.rows else 0.0,
            "words_per_row": round(self.words / self.rows, 1) if self.rows else 0.0,
            "words": self.words,
            "box_area_share": {name: round(100.0 * int(count) / boxes, 1)
                               for name, count in zip(AREA_CLASSES, self.area_classes, strict=True)},
            "coco_size_share": {name: round(100.0 * int(count) / coco, 1)
                                for name, count in zip(("small", "medium", "large"), self.coco_sizes, strict=True)},
        }


def _offsets(column: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    offsets = column.offsets.to_numpy()
    return column.flatten(), np.diff(offsets)


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True


def count_words(text: pa.Array) -> int:
    """Whitespace-separated words in a string array, counted on its UTF-8 buffer (word starts: a non-space
    byte after a space or at a string's start). Same as ``len(s.split())`` summed, for ASCII whitespace."""
    width = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], dtype=width)[text.offset:text.offset + len(text) + 1]
    start, stop = int(offsets[0]), int(offsets[-1])
    if stop <= start:
        return 0
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[start:stop]
    space = _ASCII_SPACE[data]
    after_space = np.empty_like(space)
    after_space[0] = True
    after_space[1:] = space[:-1]
    after_space[offsets[:-1] - start] = True  # each string starts a fresh word
    return int(np.count_nonzero(~space & after_space))


def table_stats(table: pa.Table) -> Stats:
    """The statistics of every row of ``table`` (schema columns ``regions``, ``conversations``, sizes)."""
    stats = Stats(rows=table.num_rows)
    if not table.num_rows:
        return stats
    regions, counts = _offsets(table.column("regions"))
    stats.regions = int(counts.sum())
    stats.max_regions = int(counts.max())
    stats.regions_hist += np.bincount(np.minimum(counts, REGION_BINS - 1), minlength=REGION_BINS)

    values, turn_counts = _offsets(table.column("conversations"))
    stats.turns = int(turn_counts.sum())
    text = pc.struct_field(values, "value")
    stats.words = count_words(text)

    if stats.regions:
        boxes = pc.struct_field(regions, "bbox").flatten().to_numpy(zero_copy_only=False)
        boxes = boxes.reshape(-1, 4).astype(np.float64)
        width = np.repeat(table.column("width").to_numpy().astype(np.float64), counts)
        height = np.repeat(table.column("height").to_numpy().astype(np.float64), counts)
        box_w = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
        box_h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-6)
        area = box_w * box_h
        relative = np.clip(area / (width * height), 1e-12, 1.0)
        stats.area_hist += np.histogram(np.clip(np.log10(relative), AREA_EDGES[0], AREA_EDGES[-1]),
                                        AREA_EDGES)[0]
        aspect = np.clip(np.log2(box_w / box_h), ASPECT_EDGES[0], ASPECT_EDGES[-1])
        stats.aspect_hist += np.histogram(aspect, ASPECT_EDGES)[0]
        stats.area_classes += np.histogram(relative, [0.0, 0.01, 0.1, 0.5, 1.0 + 1e-9])[0]
        stats.coco_sizes += np.histogram(area, [0.0, COCO_SMALL, COCO_MEDIUM, np.inf])[0]
    return stats


class CorpusStats:
    """Statistics per ``(config, task)``; the card's tables and plots are made from it."""

    def __init__(self) -> None:
        self.by_config_task: dict[tuple[str, str], Stats] = defaultdict(Stats)

    def add(self, config: str, table: pa.Table) -> None:
        tasks = table.column("task")
        names = pc.unique(tasks).to_pylist()
        for task in names:
            part = table if len(names) == 1 else table.filter(pc.equal(tasks, task))
            self.by_config_task[(config, task)].merge(table_stats(part))

    def configs(self) -> list[str]:
        """Configs in the order they were added (the recipe's order)."""
        return list(dict.fromkeys(config for config, _ in self.by_config_task))

    def total(self, config: str | None = None) -> Stats:
        """Merged statistics of one config (or of the whole corpus)."""
        total = Stats()
        for (name, _), stats in self.by_config_task.items():
            if config is None or name == config:
                total.merge(stats)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {f"{config}/{task}": stats.summary() for (config, task), stats in sorted(self.by_config_task.items())}
