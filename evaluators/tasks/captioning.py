"""Region captioning: RefCOCO / RefCOCO+ / RefCOCOg, Visual Genome (GRiT's test set) and Flickr30K phrases.

One item per evaluation row with one region and its gold ``references`` (the builders write every sentence of
a referring expression or region into ``references``), or, with ``items: region`` (Flickr30K Entities), one
item per distinct region of an image whose references are its phrases. The prompt of the config asks about
``{region}`` (rendered as ``<region1>``). A region's label is hidden from the model when it is one of the
references (Visual Genome labels a region with its own description) or a phrase item's answer. The
metrics are the COCO caption toolkit's, tokenised once per task (:mod:`evaluators.metrics.captioning`). ``region_ids_file`` restricts the task to a list of region ids (one
per line, matched against the region's ``source_id``), for the single-region Visual Genome subset other
papers use; GRiT's full test set and that subset give numbers that are not comparable
(docs/protocols.md#visual-genome-test-sets).

``items: sentence`` makes one item per (row, sentence) with that sentence as the only reference, as GLaMM
(``eval/ddp.py``: one entry per caption of MDETR's ``finetune_refcocog_val_captions.json``) and Osprey
(``refcocog_eval.py``) score RefCOCOg. ``answer_cleanup`` applies the official post-processing to the answer:
``glamm`` (``eval/region_captioning/infer.py``: newlines dropped, the text after the last ``ASSISTANT: ``,
``<...>`` tags and ``[SEG]`` removed, whitespace collapsed, quotes stripped) or ``osprey`` (the text after the
first ``:`` up to the next, each ``.`` followed by a newline).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from builders.placeholders import IMAGE_TOKEN, region_token

from ..data import resolve_path
from ..metrics.captioning import CORPUS_LEVEL, score_captions
from ..protocol import Request, digest, request_row
from .base import Job, JobKey, Task, TaskResult


@dataclass(frozen=True)
class CaptionItem:
    row_id: str
    references: tuple[str, ...]
    request: Request


def glamm_cleanup(text: str) -> str:
    """GLaMM's region-captioning post-processing of a generated answer."""
    text = text.replace("\n", "").replace("  ", " ").split("ASSISTANT: ")[-1]
    text = re.sub(r"<.*?>", "", text).replace("[SEG]", "")
    return " ".join(text.split()).strip("'").strip()


def osprey_cleanup(text: str) -> str:
    """Osprey's RefCOCOg post-processing of a generated answer."""
    text = text.strip()
    if ":" in text:
        text = text.split(":")[1]
    return text.replace(".", ".\n")


ANSWER_CLEANUP = {"none": str.strip, "glamm": glamm_cleanup, "osprey": osprey_cleanup}


class CaptionTask(Task):
    kind = "caption"
    metric_impl = ("pycocoevalcap 1.2: PTB tokenizer once per task, then Bleu(4), Meteor 1.5, Rouge-L, CIDEr "
                   "(SPICE when its CoreNLP jars are present)")

    @cached_property
    def region_ids(self) -> frozenset[str] | None:
        """The allowed region ids, or ``None`` for every region."""
        name = self.cfg.get("region_ids_file")
        if not name:
            return None
        path = resolve_path(name, self.data_root)
        if not path.is_file():
            raise FileNotFoundError(f"task {self.name}: region_ids_file {path} not found")
        ids = frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())
        if not ids:
            raise ValueError(f"task {self.name}: region_ids_file {path} lists no region id")
        return ids

    @cached_property
    def fingerprint(self) -> str:
        ids = sorted(self.region_ids) if self.region_ids is not None else None
        return digest(super().fingerprint, ids)

    @cached_property
    def all_items(self) -> list[CaptionItem]:
        prompt = f"{IMAGE_TOKEN}\n{self.cfg['prompt'].format(region=region_token(1))}"
        layout = self.cfg.get("items", "row")
        if layout not in ("row", "region", "sentence"):
            raise ValueError(f"task {self.name}: items must be row, region or sentence, got {layout!r}")
        per_region = layout == "region"
        candidates = {"row": self._row_items, "region": self._region_items, "sentence": self._sentence_items}[layout]()
        items = []
        for key, row, region, references in candidates:
            if self.region_ids is not None and region["source_id"] not in self.region_ids:
                self.skipped["not_in_region_ids"] += 1
                continue
            hide = per_region or region["label"].strip().lower() in {r.strip().lower() for r in references}
            request = Request(key, request_row(row, prompt, regions=[region], hide_region_labels=hide), prompt,
                              fields={"category": "" if hide else region["label"]})
            items.append(CaptionItem(key, tuple(references), request))
        if not items:
            raise ValueError(f"task {self.name}: no row with one region and references "
                             f"(skipped: {dict(self.skipped)})")
        return items

    def _row_items(self):
        """One item per row with one region and its ``references``."""
        for row in self.rows:
            if not row["references"]:
                self.skipped["no_references"] += 1
            elif len(row["regions"]) != 1:
                self.skipped["not_single_region"] += 1
            else:
                yield row["id"], row, row["regions"][0], list(row["references"])

    def _sentence_items(self):
        """One item per (row, sentence), that sentence its only reference (GLaMM's and Osprey's RefCOCOg)."""
        for key, row, region, references in self._row_items():
            for k, sentence in enumerate(references):
                yield f"{key}#s{k}", row, region, [sentence]

    def _region_items(self):
        """One item per distinct region of an image (``source_id``): its labels over all rows are the references
        (Flickr30K Entities: the phrases of one entity chain in the image's five sentences)."""
        groups: dict[tuple[str, str], tuple[str, dict, dict, list[str]]] = {}
        for row in self.rows:
            for region in row["regions"]:
                if not region["label"].strip():
                    self.skipped["region_without_label"] += 1
                    continue
                key = (row["image_id"], region["source_id"])
                _, _, _, labels = groups.setdefault(key, (f"{key[0]}#region{key[1]}", row, region, []))
                if region["label"] not in labels:
                    labels.append(region["label"])
        yield from groups.values()

    def jobs(self) -> list[Job]:
        return [self.job(item.request) for item in self.limited(self.all_items)]

    def score(self, answers: Mapping[JobKey, Any]) -> TaskResult:
        items = self.limited(self.all_items)
        cleanup = ANSWER_CLEANUP[self.cfg.get("answer_cleanup", "none")]
        raw = [str(answers[self.job(item.request).key]) for item in items]
        predictions = [cleanup(text) for text in raw]
        scores = score_captions(predictions, [item.references for item in items],
                                spice=None if self.cfg.get("spice", "auto") == "auto" else bool(self.cfg["spice"]))
        records = [{"id": item.row_id, "image_id": item.request.row["image_id"], "answer": text,
                    "prediction": prediction, "references": list(item.references)}
                   for item, text, prediction in zip(items, raw, predictions, strict=True)]
        return TaskResult(metrics=scores.corpus, per_item=scores.per_item, item_ids=[item.row_id for item in items],
                          records=records, corpus_level=CORPUS_LEVEL, extra={"unavailable": scores.unavailable},
                          stats=scores.stats)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        if self.cfg.get("region_ids_file"):
            described["region_ids_file"] = str(Path(self.cfg["region_ids_file"]))
        return described
