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
from builders.limits import checked_name, image_side
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
    def load(cls, path: Path, *, report: BuildReport, split: str, require_categories: bool = True,
             string_sizes: bool = False) -> CocoIndex:
        """Index a COCO-format file; ``string_sizes`` admits ``"640"`` as a size (MDETR's Flickr30K files)."""
        data = read_json(path, expect=dict)
        required = ("images", "annotations") + (("categories",) if require_categories else ())
        for key in required:
            if key not in data:
                raise SourceFileError(path, f"missing top-level key {key!r}", expected=f"COCO keys {list(required)}")
            if not isinstance(data[key], list):
                raise SourceFileError(path, f"{key!r} is a {type(data[key]).__name__}", expected="a list")
        index = cls(path=path)
        categories = data.get("categories", [])
        for position, category in enumerate(categories if isinstance(categories, list) else []):
            with report.skipping(split, f"{path.name} category {position}"):
                require_keys(category, ("id", "name"), "category")
                checked_name(category["name"], "category name")
                index.categories[record_id(category["id"], "category id")] = category
        for image in data["images"]:
            with report.skipping(split, f"{path.name} image id={_shown_id(image)}"):
                require_keys(image, ("id", "file_name", "width", "height"), "image")
                image_id = record_id(image["id"], "image id")
                if image_id in index.images_by_id:
                    raise SkipRecord("duplicate_id", f"image id {image_id!r} appears twice")
                width = image_side(image["width"], "width", digits_allowed=string_sizes)
                height = image_side(image["height"], "height", digits_allowed=string_sizes)
                index.images_by_id[image_id] = {**image, "width": width, "height": height}
        for ann in data["annotations"]:
            with report.skipping(split, f"{path.name} annotation id={_shown_id(ann)}"):
                require_keys(ann, ("id", "image_id", "bbox"), "annotation")
                ann_id = record_id(ann["id"], "annotation id")
                if ann_id in index.anns_by_id:
                    raise SkipRecord("duplicate_id", f"annotation id {ann_id!r} appears twice")
                if record_id(ann["image_id"], "image_id") not in index.images_by_id:
                    raise SkipRecord("missing_image", f"image id {ann['image_id']!r} is not in 'images'")
                index.anns_by_id[ann_id] = ann
                index.anns_by_image[ann["image_id"]].append(ann)
        return index

    def images(self) -> Iterator[dict[str, Any]]:
        """Images in ascending id order, integer ids before string ids (deterministic whatever the file's order).

        Sizes are already checked whole numbers of pixels (:func:`builders.limits.image_side`).
        """
        for image_id in sorted(self.images_by_id, key=id_order):
            yield self.images_by_id[image_id]

    def annotations_of(self, image_id: int | str) -> list[dict[str, Any]]:
        return sorted(self.anns_by_image.get(image_id, []), key=lambda ann: id_order(ann["id"]))

    def category_name(self, ann: dict[str, Any]) -> str:
        category_id = ann.get("category_id")
        category = self.categories.get(category_id) if _is_id(category_id) else None
        if category is None:
            raise SkipRecord("unknown_category", f"category_id {category_id!r} is not in 'categories'")
        return category["name"]

    @staticmethod
    def image_path(image: dict[str, Any], image_dir: str) -> str:
        """The image's path relative to the raw root, checked not to escape it."""
        name = image["file_name"]
        if not isinstance(name, str):
            raise SkipRecord("unsafe_image_path", f"file_name {name!r} is not a string")
        return relative_image_path(f"{image_dir}/{name}" if image_dir else name)


def record_id(value: Any, what: str) -> int | str:
    """An id as the releases write them: an integer or a string. Anything else (a list, a float, ``true``)
    is a :class:`SkipRecord` (``bad_id``): it could not be looked up, sorted or written as a key."""
    if not _is_id(value):
        raise SkipRecord("bad_id", f"{what} {value!r} is a {type(value).__name__}, expected an integer or a string")
    return value


def id_order(value: int | str) -> tuple[bool, int | str]:
    """Sort key of mixed ids: integers first, in numeric order, then strings."""
    return isinstance(value, str), value


def _is_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _shown_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else "?"
