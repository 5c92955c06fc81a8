"""COCO ``instances_<split><year>.json`` -> ``region_category`` rows.

One row per image: the first human turn lists the category vocabulary, then every human turn asks for the
category of one region and the assistant answers with its name (GPT4RoI's stage-1 COCO task). Crowd
annotations and boxes under 1 px are skipped and counted. Images with more than ``max_regions`` objects are
split into several rows (``<image_id>:<k>``) so that no annotation is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builders.boxes import checked_box, xywh_to_xyxy
from builders.errors import SkipRecord
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.readers.cocofile import CocoIndex, find_coco_file
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, region, turn
from builders.sources.templates import CATEGORY_VOCABULARY, REGION_CATEGORY, pick

SPLIT_FILES = {"train": "train", "validation": "val"}


class CocoBuilder(RegionBuilder):
    SOURCE = "coco"
    DESCRIPTION = "COCO instance annotations as region-category questions."
    LICENSE = "CC BY 4.0 (annotations); images under Flickr terms"
    CITATION = "Lin et al., Microsoft COCO: Common Objects in Context, ECCV 2014."
    DEFAULT_OPTIONS = {"year": "2017", "max_regions": 100, "image_dir": "{split}{year}"}

    def _annotation_file(self, split: str) -> Path | None:
        name = f"instances_{SPLIT_FILES[split]}{self.options['year']}.json"
        return find_coco_file(self.raw_root, name)

    def available_splits(self) -> list[str]:
        return [split for split in SPLIT_FILES if self._annotation_file(split) is not None]

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        path = self._annotation_file(split)
        self.report.add_input(path)
        index = CocoIndex.load(path, report=self.report, split=split)
        vocabulary = ", ".join(category["name"] for category in index.categories.values())
        image_dir = self.options["image_dir"].format(split=SPLIT_FILES[split], year=self.options["year"])
        max_regions = int(self.options["max_regions"])

        for image in index.images():
            image_id = image["id"]
            regions: list[dict[str, Any]] = []
            for ann in index.annotations_of(image_id):
                with self.skipping(split, f"{path.name} annotation id={ann.get('id')}"):
                    regions.append(self._region(ann, image, index))
            if not regions:
                continue
            rng = row_rng(self.seed, f"{split}:{image_id}")
            rng.shuffle(regions)
            chunks = [regions[i:i + max_regions] for i in range(0, len(regions), max_regions)]
            for k, chunk in enumerate(chunks):
                with self.skipping(split, f"{path.name} image id={image_id}"):
                    key = str(image_id) if k == 0 else f"{image_id}:{k}"
                    yield self.make_row(
                        key=key, split=split, task="region_category",
                        image=index.image_path(image, image_dir), image_id=str(image_id),
                        width=image["width"], height=image["height"], regions=chunk,
                        conversations=self._conversation(chunk, vocabulary, rng),
                        meta={"coco_image_id": image_id, "file_name": image["file_name"],
                              "annotation_ids": [int(r["source_id"]) for r in chunk]},
                    )

    def _region(self, ann: dict[str, Any], image: dict[str, Any], index: CocoIndex) -> dict[str, Any]:
        if ann.get("iscrowd", 0):
            raise SkipRecord("crowd_annotation")
        if type(ann.get("id")) is not int:  # COCO's annotation ids are integers; the row's meta lists them as such
            raise SkipRecord("bad_id", f"annotation id {ann.get('id')!r} is not an integer")
        category = index.category_name(ann)
        bbox = checked_box(xywh_to_xyxy(ann["bbox"]), image["width"], image["height"])
        return region(bbox, label=category, source_id=ann["id"], segmentation=ann.get("segmentation"))

    @staticmethod
    def _conversation(regions: list[dict[str, Any]], vocabulary: str, rng) -> list[dict[str, str]]:
        turns = []
        for k, item in enumerate(regions, start=1):
            question = pick(rng, REGION_CATEGORY, region=region_token(k))
            if k == 1:
                question = f"{IMAGE_TOKEN}\n{pick(rng, CATEGORY_VOCABULARY, names=vocabulary)} {question}"
            turns += [turn("human", question), turn("gpt", item["label"])]
        return turns
