"""Train/eval contamination: which training rows show an evaluation image, or the same region of it.

RefCOCO/+/g validation and test images are COCO train2014 images; Visual Genome shares about 50K images with
COCO and some with Flickr30K; LLaVA-Instruct is built on COCO train2017. A model trained on such a corpus may
have seen an evaluation image, or been taught the very box it is asked about. This module indexes the
evaluation splits by canonical image identity (:mod:`builders.corpus.image_identity`, optionally a perceptual hash)
and checks every training row against it:

* an **image overlap**: the row's image is an evaluation image;
* a **region overlap**: additionally one of its boxes has IoU >= ``iou`` with a box of that evaluation row.
  Boxes are compared in coordinates normalised by each row's own image size, so that a copy of the image at
  another resolution (Visual Genome re-hosts COCO images) still matches.

``gpt4roi contamination train=<folder> eval=[<folder>, ...]`` prints the table and writes JSON;
``gpt4roi corpus`` runs the same check against the recipe's evaluation splits and can drop the rows.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from builders.boxes import box_iou
from builders.corpus.image_identity import HashIndex, image_keys, perceptual_hash, primary_key
from builders.errors import SourceFileError
from builders.storage.datafolder import SplitFiles, list_splits

DEFAULT_IOU = 0.9
IDENTITY_COLUMNS = ["source", "image", "image_id", "meta", "width", "height", "regions"]
LEVELS = ("image", "region")


@dataclass(frozen=True)
class RowImage:
    """What the check needs of one row: identities, pixels (for hashing) and normalised boxes."""

    keys: frozenset[str]
    path: str | None
    data: bytes | None
    source: str
    boxes: np.ndarray  # (n, 4) xyxy divided by (W, H, W, H)

    @property
    def primary(self) -> str:
        return primary_key(self.keys)


def batch_images(batch: pa.RecordBatch | pa.Table) -> Iterator[RowImage]:
    """The :class:`RowImage` of every row of a batch read with (at least) :data:`IDENTITY_COLUMNS`."""
    image = batch.column("image")
    paths = pc.struct_field(image, "path").to_pylist()
    data = pc.struct_field(image, "bytes").to_pylist()
    regions = batch.column("regions")
    if isinstance(regions, pa.ChunkedArray):
        regions = regions.combine_chunks()
    offsets = (regions.offsets.to_numpy() - regions.offsets[0].as_py()).tolist()
    flat = pc.struct_field(regions.flatten(), "bbox")
    boxes = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, 4).astype(np.float64)
    scale = np.stack([batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
                      for name in ("width", "height", "width", "height")], axis=1)
    boxes /= np.repeat(scale, np.diff(offsets), axis=0)
    columns = zip(batch.column("source").to_pylist(), batch.column("image_id").to_pylist(),
                  batch.column("meta").to_pylist(), strict=True)
    for index, (source, image_id, meta) in enumerate(columns):
        yield RowImage(image_keys(source, paths[index], image_id, meta), paths[index], data[index], source,
                       boxes[offsets[index]:offsets[index + 1]])


class ImageHasher:
    """Perceptual hashes of rows' images, cached per canonical identity (VG has many rows per image)."""

    def __init__(self, kind: str, roots: dict[str, Path] | None = None, root: Path | None = None):
        self.kind = kind
        self.roots = {name: Path(value) for name, value in (roots or {}).items()}
        self.root = Path(root) if root else None
        self._cache: dict[str, int | None] = {}
        self.missing = 0

    def __call__(self, row: RowImage) -> int | None:
        if row.primary in self._cache:
            return self._cache[row.primary]
        value = None
        if row.data:
            value = perceptual_hash(row.data, self.kind)
        else:
            base = self.roots.get(row.source, self.root)
            path = base / row.path if base is not None and row.path else None
            if path is not None and path.is_file():
                value = perceptual_hash(path, self.kind)
            else:
                self.missing += 1
        self._cache[row.primary] = value
        return value


@dataclass
class EvalEntry:
    label: str
    row: int
    boxes: np.ndarray


@dataclass
class EvalIndex:
    """The evaluation rows, reachable by image identity and (optionally) perceptual hash."""

    by_key: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    entries: list[EvalEntry] = field(default_factory=list)
    sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    hashes: HashIndex | None = None
    hasher: ImageHasher | None = None

    def add_split(self, label: str, split: SplitFiles) -> None:
        images: set[str] = set()
        rows = 0
        for batch in split.batches(IDENTITY_COLUMNS):
            for row in batch_images(batch):
                entry_id = len(self.entries)
                self.entries.append(EvalEntry(label, rows, row.boxes))
                for key in row.keys:
                    self.by_key[key].append(entry_id)
                if self.hasher is not None:
                    value = self.hasher(row)
                    if value is not None:
                        self.hashes.add(value, entry_id)
                images.add(row.primary)
                rows += 1
        self.sizes[label] = {"rows": rows, "images": len(images)}

    def matches(self, row: RowImage) -> list[EvalEntry]:
        """The evaluation rows showing the image of ``row`` (by id, or by pixels when hashing is on)."""
        found: set[int] = set()
        for key in row.keys:
            found.update(self.by_key.get(key, ()))
        if self.hasher is not None:
            value = self.hasher(row)
            if value is not None:
                found.update(self.hashes.near(value))
        return [self.entries[entry_id] for entry_id in sorted(found)]


def build_eval_index(splits: list[tuple[str, SplitFiles]], *, phash: str | None = None, max_distance: int = 0,
                     image_roots: dict[str, Path] | None = None, image_root: Path | None = None) -> EvalIndex:
    """Index the evaluation splits, each given as ``(label, files)``."""
    index = EvalIndex()
    if phash:
        index.hashes = HashIndex(max_distance)
        index.hasher = ImageHasher(phash, image_roots, image_root)
    for label, split in splits:
        index.add_split(label, split)
    return index


def overlapping_regions(train_boxes: np.ndarray, eval_boxes: np.ndarray, threshold: float) -> set[int]:
    """Indices of training boxes with IoU >= ``threshold`` against any evaluation box."""
    return {i for i, box in enumerate(train_boxes.tolist())
            if any(box_iou(box, other) >= threshold for other in eval_boxes.tolist())}


@dataclass
class Cell:
    """Overlap of one training config with one evaluation split."""

    images: set[str] = field(default_factory=set)
    train_rows: int = 0
    train_regions: int = 0
    region_rows: int = 0
    eval_rows: set[int] = field(default_factory=set)
    dropped: int = 0


@dataclass
class RowHits:
    """What one training row overlaps, per evaluation label: (eval rows, overlapping train region indices)."""

    by_label: dict[str, tuple[set[int], set[int]]] = field(default_factory=dict)

    def contaminated(self, level: str) -> bool:
        if level == "image":
            return bool(self.by_label)
        return any(regions for _, regions in self.by_label.values())


class ContaminationChecker:
    """Checks training rows against an :class:`EvalIndex` and accumulates the table."""

    def __init__(self, index: EvalIndex, iou: float = DEFAULT_IOU):
        self.index = index
        self.iou = iou
        self.cells: dict[tuple[str, str], Cell] = defaultdict(Cell)
        self.train_rows: dict[str, int] = defaultdict(int)

    def check(self, row: RowImage) -> RowHits:
        if not self.index.entries:
            return RowHits()
        by_label: dict[str, tuple[set[int], set[int]]] = {}
        for entry in self.index.matches(row):
            rows, regions = by_label.setdefault(entry.label, (set(), set()))
            rows.add(entry.row)
            if len(row.boxes) and len(entry.boxes):
                regions.update(overlapping_regions(row.boxes, entry.boxes, self.iou))
        return RowHits(by_label)

    def record(self, train: str, primary: str, hits: RowHits, *, dropped: bool = False, copies: int = 1) -> None:
        """Count a checked row (image identity ``primary``) as written ``copies`` times (``repeat: k``), or
        as removed by decontamination."""
        if not dropped:
            self.train_rows[train] += copies
        for label, (rows, regions) in hits.by_label.items():
            cell = self.cells[(train, label)]
            if dropped:
                cell.dropped += 1
                continue
            cell.images.add(primary)
            cell.train_rows += copies
            cell.train_regions += len(regions) * copies
            cell.region_rows += bool(regions) * copies
            cell.eval_rows.update(rows)

    def check_split(self, train: str, split: SplitFiles) -> None:
        for batch in split.batches(IDENTITY_COLUMNS):
            for row in batch_images(batch):
                self.record(train, row.primary, self.check(row))

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for (train, label), cell in sorted(self.cells.items()):
            eval_total = self.index.sizes.get(label, {}).get("rows", 0)
            rows.append({
                "train": train, "eval": label, "overlapping_images": len(cell.images),
                "train_rows": cell.train_rows, "train_regions_iou": cell.train_regions,
                "train_rows_with_region": cell.region_rows, "eval_rows_seen": len(cell.eval_rows),
                "eval_rows": eval_total,
                "eval_rows_seen_pct": round(100.0 * len(cell.eval_rows) / eval_total, 2) if eval_total else 0.0,
                "dropped_rows": cell.dropped,
            })
        hasher = self.index.hasher
        return {
            "iou_threshold": self.iou,
            "perceptual_hash": hasher.kind if hasher else None,
            "max_hash_distance": self.index.hashes.max_distance if self.index.hashes else None,
            "images_not_hashed": hasher.missing if hasher else 0,
            "eval_splits": self.index.sizes,
            "train_rows": dict(sorted(self.train_rows.items())),
            "overlaps": rows,
        }


TABLE_COLUMNS = [
    ("train", "train config"), ("eval", "eval split"), ("overlapping_images", "shared images"),
    ("train_rows", "train rows on them"), ("train_regions_iou", "train regions IoU>=thr"),
    ("eval_rows_seen", "eval rows seen"), ("eval_rows_seen_pct", "eval rows seen %"),
    ("dropped_rows", "dropped rows"),
]


def markdown_table(report: dict[str, Any]) -> str:
    """The overlap table as markdown (for the dataset card); says so when nothing overlaps."""
    if not report["overlaps"]:
        labels = ", ".join(sorted(report["eval_splits"])) or "none"
        return f"No training row shares an image with the evaluation splits checked ({labels})."
    lines = ["| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
             "|" + "---|" * len(TABLE_COLUMNS)]
    for row in report["overlaps"]:
        lines.append("| " + " | ".join(str(row[name]) for name, _ in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def wide_console():
    """A rich console at least 120 columns wide, so that piped output keeps whole table cells."""
    from rich.console import Console

    console = Console()
    return Console(width=max(console.width, 120))


def print_table(report: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=f"{title} (IoU >= {report['iou_threshold']})")
    for name, _ in TABLE_COLUMNS:
        table.add_column(name.replace("_", " "), overflow="fold", no_wrap=name in ("train", "eval"))
    for row in report["overlaps"]:
        table.add_row(*(str(row[name]) for name, _ in TABLE_COLUMNS))
    console = wide_console()
    console.print(table)
    if not report["overlaps"]:
        console.print("no overlap found")
    if report["images_not_hashed"]:
        console.print(f"[yellow]{report['images_not_hashed']} images could not be hashed (file not found)")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def eval_splits_of(folder: Path, wanted: list[str]) -> list[tuple[str, SplitFiles]]:
    """``(label, files)`` for each split of ``folder`` named in ``wanted`` (all but train when empty)."""
    chosen = [split for split in list_splits(folder)
              if (split.split in wanted if wanted else split.split != "train")]
    if not chosen:
        raise SourceFileError(folder, f"no evaluation split found (wanted {wanted or 'any split but train'})")
    return [(f"{split.config or folder.name}:{split.split}", split) for split in chosen]


def main(cfg: Any) -> int:
    """Entry point of ``gpt4roi contamination train=<folder> eval=<folder or [folders]>``."""
    train = Path(cfg.train)
    evals = [Path(item) for item in _as_list(cfg.eval)]
    if not evals:
        raise ValueError("contamination: give at least one evaluation folder (eval=<folder> or eval=[a,b])")
    wanted = _as_list(cfg.eval_splits)
    eval_splits = [pair for folder in evals for pair in eval_splits_of(folder, wanted)]
    roots = {str(key): Path(value) for key, value in (cfg.image_roots or {}).items()}
    index = build_eval_index(eval_splits, phash=cfg.phash, max_distance=int(cfg.max_hash_distance),
                             image_roots=roots, image_root=Path(cfg.image_root) if cfg.image_root else None)
    checker = ContaminationChecker(index, iou=float(cfg.iou))
    for split in list_splits(train):
        if split.split in _as_list(cfg.train_splits) or not _as_list(cfg.train_splits):
            checker.check_split(split.config or train.name, split)
    report = checker.to_dict()
    print_table(report, f"contamination of {train}")
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0
