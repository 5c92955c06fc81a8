"""A checked index over a COCO-format annotation file.

Shared by every source that ships COCO-format JSON: COCO's ``instances_*.json``, RefCOCO's
``instances.json``, MDETR's ``finetune_*`` / ``final_flickr_*`` files and GRiT's Visual Genome files.
Structural problems of the file (wrong top-level type, missing ``images``) are errors; problems of one
record (duplicate id, annotation of a missing image) are counted skips.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builders.errors import SkipRecord, SourceFileError
from builders.readers.jsonio import iter_json_array, read_json, require_keys
from builders.readers.paths import relative_image_path
from builders.storage.report import BuildReport


def iter_coco_records(path: str | Path, key: str) -> Iterator[Any]:
    """Stream the list ``key`` (``images``, ``annotations``) of a COCO-format file too large to parse whole.

    GRiT's Visual Genome ``train.json`` holds millions of annotations; a whole-file parse needs several GB
    before a single row is written, while ijson yields one record at a time.
    """
    return iter_json_array(path, f"{key}.item", top_level="object",
                           what="a COCO-format object with 'images' and 'annotations'")


def find_coco_file(raw_root: Path, name: str) -> Path | None:
    """``raw_root/annotations/<name>`` or ``raw_root/<name>``, whichever exists."""
    for candidate in (raw_root / "annotations" / name, raw_root / name):
        if candidate.is_file():
            return candidate
    return None


@dataclass
class CocoIndex:
    path: Path
    images_by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    anns_by_image: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    anns_by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    categories: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, *, report: BuildReport, split: str, require_categories: bool = True) -> CocoIndex:
        data = read_json(path, expect=dict)
        required = ("images", "annotations") + (("categories",) if require_categories else ())
        for key in required:
            if key not in data:
                raise SourceFileError(path, f"missing top-level key {key!r}", expected=f"COCO keys {list(required)}")
            if not isinstance(data[key], list):
                raise SourceFileError(path, f"{key!r} is a {type(data[key]).__name__}", expected="a list")
        index = cls(path=path)
        for category in data.get("categories", []):
            index.categories[category["id"]] = category
        for image in data["images"]:
            with report.skipping(split, f"{path.name} image id={image.get('id') if isinstance(image, dict) else '?'}"):
                require_keys(image, ("id", "file_name", "width", "height"), "image")
                if image["id"] in index.images_by_id:
                    raise SkipRecord("duplicate_id", f"image id {image['id']} appears twice")
                width, height = int(image["width"]), int(image["height"])
                if width <= 0 or height <= 0:
                    raise SkipRecord("bad_image_size", f"{width}x{height}")
                index.images_by_id[image["id"]] = image
        for ann in data["annotations"]:
            with report.skipping(split, f"{path.name} annotation id={ann.get('id') if isinstance(ann, dict) else '?'}"):
                require_keys(ann, ("id", "image_id", "bbox"), "annotation")
                if ann["id"] in index.anns_by_id:
                    raise SkipRecord("duplicate_id", f"annotation id {ann['id']} appears twice")
                if ann["image_id"] not in index.images_by_id:
                    raise SkipRecord("missing_image", f"image id {ann['image_id']} is not in 'images'")
                index.anns_by_id[ann["id"]] = ann
                index.anns_by_image[ann["image_id"]].append(ann)
        return index

    def images(self) -> Iterator[dict[str, Any]]:
        """Images in ascending id order (deterministic whatever the file's order)."""
        for image_id in sorted(self.images_by_id):
            yield self.images_by_id[image_id]

    def annotations_of(self, image_id: int) -> list[dict[str, Any]]:
        return sorted(self.anns_by_image.get(image_id, []), key=lambda ann: ann["id"])

    def category_name(self, ann: dict[str, Any]) -> str:
        category = self.categories.get(ann.get("category_id"))
        if category is None:
            raise SkipRecord("unknown_category", f"category_id {ann.get('category_id')!r} is not in 'categories'")
        return category["name"]

    @staticmethod
    def image_path(image: dict[str, Any], image_dir: str, raw_root: Path) -> str:
        """The image's path relative to the raw root, checked not to escape it."""
        return relative_image_path(raw_root, f"{image_dir}/{image['file_name']}" if image_dir else image["file_name"])
