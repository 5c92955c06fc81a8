"""Grounding: a box predicted from text (docs/protocols.md#grounding).

Two item layouts, one scoring:

* ``items: expression`` — referring expression comprehension on RefCOCO / RefCOCO+ / RefCOCOg: one item per
  (evaluation row, sentence in ``references``), the row's single region is the gold box (lmms-eval's
  ``refcoco_bbox_rec`` tasks also explode every sentence into its own item);
* ``items: phrase`` — Flickr30K Entities phrase grounding: one item per (caption row, entity chain); the
  chain's boxes (one region per box in a ``boxes=separate`` build, their union in a ``merged`` build) are the
  gold. ``box_protocol: any`` counts a prediction right when it overlaps any of the chain's boxes,
  ``merged`` compares it with the union of the boxes.

The model never sees the gold region: the request row has no regions, and ``fields`` holds the
``expression`` and ``answer: box``. The answer is read in the
**coordinate convention the model declares** (:attr:`evaluators.protocol.EvalModel.coordinates`, bound by the
runner through :meth:`GroundingTask.bind_model`); the task's prompt states that convention, and the parser
never infers it from the numbers. An answer without four numbers is ``unparsable``, one whose numbers leave
the declared range (or give an empty box) is ``out_of_range``; both score IoU 0 and are counted.

Metrics (x100, per item): ``Acc@0.5`` (IoU >= 0.5, as lmms-eval; ``R@1`` for phrase grounding, where the one
predicted box is the top-1) and ``mIoU``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from builders.boxes import box_iou, union_box
from builders.placeholders import IMAGE_TOKEN

from ..protocol import COORDINATE_CONVENTIONS, EvalModel, Request, request_row
from .base import Job, JobKey, Task, TaskResult

_NUMBER = r"-?\d+(?:\.\d+)?"
_FOUR = re.compile(rf"({_NUMBER})\s*,?\s*({_NUMBER})\s*,?\s*({_NUMBER})\s*,?\s*({_NUMBER})")
# How each convention is described to the model (normalized_xyxy is lmms-eval's sentence, byte for byte).
FORMAT_SENTENCES = {
    "normalized_xyxy": "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right "
                       "x, bottom-right y). All values are floating point numbers bounded between 0 and 1.",
    "normalized_xywh": "Bounding box coordinates are specified in the format (top-left x, top-left y, width, "
                       "height). All values are floating point numbers bounded between 0 and 1.",
    "per_mille_xyxy": "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right "
                      "x, bottom-right y). All values are integers between 0 and 1000.",
    "per_mille_xywh": "Bounding box coordinates are specified in the format (top-left x, top-left y, width, "
                      "height). All values are integers between 0 and 1000.",
    "pixels_xyxy": "Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, "
                   "bottom-right y), in pixels of the original image.",
    "pixels_xywh": "Bounding box coordinates are specified in the format (top-left x, top-left y, width, height), "
                   "in pixels of the original image.",
}
BOX_PROTOCOLS = ("any", "merged")


@dataclass(frozen=True)
class GroundingItem:
    key: str
    image_id: str
    query: str
    gold: tuple[tuple[float, float, float, float], ...]
    request: Request


@dataclass(frozen=True)
class ParsedBox:
    """A parsed answer: ``box`` in xyxy pixels, or ``None`` with ``status`` saying why."""

    box: tuple[float, float, float, float] | None
    status: str  # "ok", "unparsable", "out_of_range"


def parse_box(answer: str, convention: str, width: float, height: float) -> ParsedBox:
    """The first four numbers of ``answer`` read in ``convention`` and returned as xyxy pixels.

    The range of the convention is checked, never guessed: ``[0.2, 0.3, 0.5, 0.6]`` read as ``per_mille`` is a
    box of a few pixels, and ``[20, 30, 50, 60]`` read as ``normalized`` is out of range.
    """
    if convention not in COORDINATE_CONVENTIONS:
        raise ValueError(f"unknown coordinate convention {convention!r}; one of {COORDINATE_CONVENTIONS}")
    match = _FOUR.search(answer)
    if not match:
        return ParsedBox(None, "unparsable")
    a, b, c, d = (float(match.group(k)) for k in range(1, 5))
    scale, order = convention.rsplit("_", 1)
    if order == "xywh":
        c, d = a + c, b + d
    limit_x, limit_y = {"normalized": (1.0, 1.0), "per_mille": (1000.0, 1000.0), "pixels": (width, height)}[scale]
    if min(a, b) < 0 or max(a, c) > limit_x or max(b, d) > limit_y or c <= a or d <= b:
        return ParsedBox(None, "out_of_range")
    sx, sy = width / limit_x, height / limit_y
    return ParsedBox((a * sx, b * sy, c * sx, d * sy), "ok")


class GroundingTask(Task):
    kind = "grounding"
    metric_impl = ("IoU of the first four numbers of the answer, read in the model's declared convention "
                   "(unparsable / out of range = IoU 0, counted); Acc@0.5: IoU >= 0.5")

    def __init__(self, name: str, cfg: Mapping[str, Any], data_root: Any = None, limit: int | None = None):
        super().__init__(name, cfg, data_root, limit)
        self.items_kind = self.choice("items", "expression", ("expression", "phrase"))
        self.box_protocol = self.choice("box_protocol", "any", BOX_PROTOCOLS)
        self.accuracy_name = self.cfg.get("accuracy_name", "Acc@0.5")
        self.coordinates: str | None = None

    def bind_model(self, model: EvalModel) -> None:
        """Take the model's declared coordinate convention; a model that declares none cannot be scored."""
        convention = getattr(model, "coordinates", None)
        if convention not in COORDINATE_CONVENTIONS:
            raise ValueError(f"task {self.name}: model {model.name} declares no coordinate convention "
                             f"(coordinates={convention!r}); set `coordinates:` in its config to one of "
                             f"{COORDINATE_CONVENTIONS}")
        self.coordinates = convention

    def job(self, request: Request) -> Job:
        """The convention is part of the cache scope (the prompt depends on it), not of the task fingerprint:
        models with different conventions answer the same items, and the leaderboard pairs them."""
        if self.coordinates is None:
            raise ValueError(f"task {self.name}: no coordinate convention bound (bind_model first)")
        return Job(scope=f"{self.fingerprint}:{self.coordinates}", mode=self.mode, settings=self.settings,
                   request=request)

    # --- items -------------------------------------------------------------------------------------------
    @cached_property
    def candidates(self) -> list[tuple[str, dict[str, Any], str, list[list[float]]]]:
        """``(key, row, query, gold boxes)`` of every item, in row order."""
        out = []
        for row in self.rows:
            if self.items_kind == "expression":
                if len(row["regions"]) != 1:
                    self.skipped["not_single_region"] += 1
                    continue
                sentences = list(row["references"]) or [turn["value"] for turn in row["conversations"][1:2]]
                for k, sentence in enumerate(sentences):
                    if sentence.strip():
                        out.append((f"{row['id']}#s{k}", row, sentence.strip(), [row["regions"][0]["bbox"]]))
            else:
                chains: dict[str, tuple[str, list[list[float]]]] = {}
                for region in row["regions"]:
                    if not region["label"].strip():
                        self.skipped["region_without_label"] += 1
                        continue
                    chains.setdefault(region["source_id"], (region["label"].strip(), []))[1].append(region["bbox"])
                for chain, (phrase, boxes) in chains.items():
                    out.append((f"{row['id']}#chain{chain}", row, phrase, boxes))
        if not out:
            raise ValueError(f"task {self.name}: no item (skipped: {dict(self.skipped)})")
        return out

    def items(self) -> list[GroundingItem]:
        items = []
        for key, row, query, boxes in self.limited(self.candidates):
            gold = [union_box(boxes)] if self.box_protocol == "merged" else boxes
            prompt = f"{IMAGE_TOKEN}\n{self.render_prompt(row, query)}"
            request = Request(key, request_row(row, prompt, regions=[]), prompt,
                              fields={"expression": query, "answer": "box"})
            items.append(GroundingItem(key, str(row["image_id"]), query, tuple(tuple(b) for b in gold), request))
        return items

    def render_prompt(self, row: Mapping[str, Any], query: str) -> str:
        fields = {"format": FORMAT_SENTENCES[self.coordinates or "normalized_xyxy"], "expression": query}
        if "{sentence}" in self.cfg["prompt"]:
            fields["sentence"] = next((t["value"] for t in row["conversations"] if t["from"] == "gpt"), "")
        return self.cfg["prompt"].format(**fields)

    def jobs(self) -> list[Job]:
        return [self.job(item.request) for item in self.items()]

    # --- scoring -----------------------------------------------------------------------------------------
    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items = self.items()
        ious, records, status_counts = [], [], {"ok": 0, "unparsable": 0, "out_of_range": 0}
        for item in items:
            text = str(answers[self.job(item.request).key])
            row = item.request.row
            parsed = parse_box(text, str(self.coordinates), float(row["width"]), float(row["height"]))
            status_counts[parsed.status] += 1
            iou = max(box_iou(parsed.box, gold) for gold in item.gold) if parsed.box else 0.0
            ious.append(iou)
            records.append({"id": item.key, "image_id": item.image_id, "query": item.query, "answer": text,
                            "status": parsed.status, "box": list(parsed.box) if parsed.box else None,
                            "gold": [list(g) for g in item.gold], "iou": iou})
        hits = [100.0 * (iou >= 0.5) for iou in ious]
        miou = [100.0 * iou for iou in ious]
        n = max(len(items), 1)
        return TaskResult(metrics={self.accuracy_name: sum(hits) / n, "mIoU": sum(miou) / n},
                          per_item={self.accuracy_name: hits, "mIoU": miou}, item_ids=[i.key for i in items],
                          records=records, extra={"answers": status_counts, "coordinates": self.coordinates,
                                                  "box_protocol": self.box_protocol})

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["coordinates"] = self.coordinates
        if self.items_kind == "phrase":
            described["box_protocol"] = self.box_protocol
        return described
