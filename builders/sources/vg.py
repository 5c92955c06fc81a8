"""Visual Genome -> ``region_caption`` rows (docs/formats.md#visual-genome).

Two layouts:

* ``release``: the v1.2 files ``image_data.json`` and ``region_descriptions.json``. Entry *i* of the region
  file describes entry *i* of ``image_data.json``; both are streamed side by side (the region file is about
  700 MB) and a pair whose ids differ stops the build, since every later pair would be wrong too. The release
  has no split: everything is ``train``, except the images listed in the optional ``test_image_ids`` file
  (one id per line), which become ``test``.
* ``grit``: GRiT's COCO-format ``{train,test}.json`` (one annotation per region with a ``caption``), which
  GPT4RoI trained and evaluated on, looked for where the releases put them: ``annotations/`` (GRiT's own
  ``datasets/vg`` layout), ``VG_preprocessed_annotations/`` (the download's folder name), or the root
  (GPT4RoI's ``visual_genome/``). The pictures are in one folder: ``grit_image_dir: auto`` takes ``images/``
  (GRiT) or ``vg_all/`` (GPT4RoI), whichever exists. Streamed too; only a compact tuple per region is held
  until its image is written.

Training rows: each image's regions are shuffled (seeded by the image id) and cut into the fewest rows of at
most ``max_turns`` questions, so that every region is asked about exactly once (GPT4RoI instead draws 15 at
random per epoch). Evaluation rows: one per region, its phrase in ``references``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Any

from builders.boxes import checked_box, xywh_to_xyxy
from builders.errors import SkipRecord, SourceFileError
from builders.limits import image_side
from builders.readers.cocofile import iter_coco_records, record_id
from builders.readers.jsonio import iter_json_array, read_text, require_keys
from builders.readers.paths import relative_image_path
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, meta_json, region
from builders.sources.captions import balanced_chunks, caption_turns
from builders.sources.templates import REGION_CAPTION

TASK = "region_caption"
LAYOUTS = ("auto", "release", "grit")
GRIT_DIRS = ("annotations", "VG_preprocessed_annotations", "")  # GRiT's datasets/vg, the download, GPT4RoI
GRIT_IMAGE_DIRS = ("images", "vg_all")  # GRiT's datasets/vg/images, GPT4RoI's visual_genome/vg_all
_END = object()
_PLAIN_NAME = re.compile(r"^[\w][\w.-]*$")


@dataclass
class _Image:
    """One image and its converted regions, ready to be cut into rows."""

    image_id: Any
    width: int
    height: int
    path: str
    meta: dict[str, Any]
    regions: list[dict[str, Any]]


class VisualGenomeBuilder(RegionBuilder):
    SOURCE = "vg"
    DESCRIPTION = "Visual Genome region descriptions as region captions."
    LICENSE = "CC BY 4.0"
    CITATION = "Krishna et al., Visual Genome, IJCV 2017; Wu et al., GRiT, 2022 (preprocessed split)."
    DEFAULT_OPTIONS = {"layout": "auto", "max_turns": 15, "test_image_ids": None, "grit_image_dir": "auto"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.options["layout"] not in LAYOUTS:
            raise ValueError(f"vg: layout must be one of {LAYOUTS}, got {self.options['layout']!r}")
        self.max_turns = int(self.options["max_turns"])
        if self.max_turns < 1:
            raise ValueError(f"vg: max_turns must be at least 1, got {self.max_turns}")
        self.image_data_path = self.raw_root / "image_data.json"
        self.regions_path = self.raw_root / "region_descriptions.json"
        self.layout = self._resolve_layout()
        self._held_out: set[int] | None = None
        self._folders: dict[str, str] = {}

    def _resolve_layout(self) -> str:
        if self.options["layout"] != "auto":
            return self.options["layout"]
        if self.image_data_path.is_file() and self.regions_path.is_file():
            return "release"
        return "grit"

    def _grit_path(self, split: str) -> Path:
        """The first of ``annotations/``, ``VG_preprocessed_annotations/``, the root that holds ``<split>.json``."""
        candidates = [self.raw_root / folder / f"{split}.json" for folder in GRIT_DIRS]
        return next((path for path in candidates if path.is_file()), candidates[0])

    def _grit_image_dir(self) -> str:
        wanted = self.options["grit_image_dir"]
        if wanted != "auto":
            return wanted
        return next((name for name in GRIT_IMAGE_DIRS if (self.raw_root / name).is_dir()), GRIT_IMAGE_DIRS[0])

    def available_splits(self) -> list[str]:
        if self.layout == "grit":
            return [split for split in ("train", "test") if self._grit_path(split).is_file()]
        if not (self.image_data_path.is_file() and self.regions_path.is_file()):
            return []
        return ["train", "test"] if self.options["test_image_ids"] else ["train"]

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        for unit in self.work_units(split):
            yield from self.unit_rows(split, unit)

    def work_units(self, split: str) -> Iterator[Any]:
        """Release: ``(image_data entry, region record, image id)`` per image, checked for order and duplicates
        here; GRiT: each :class:`_Image` with its regions (its annotations must be grouped over the whole file)."""
        return self._grit_images(split) if self.layout == "grit" else self._release_units(split)

    def json_units(self) -> bool:
        return self.layout == "release"  # the records as ijson read them; a unit's tuple arrives as a list

    def unit_rows(self, split: str, unit: Any) -> Iterator[dict[str, Any]]:
        image = unit if isinstance(unit, _Image) else self._release_image_of(split, *unit)
        if image is None or not image.regions:
            return
        yield from (self._train_rows(split, image) if split == "train" else self._eval_rows(split, image))

    # ----- rows -------------------------------------------------------------------------------------------------
    def _train_rows(self, split: str, image: _Image) -> Iterator[dict[str, Any]]:
        rng = row_rng(self.seed, f"{split}:{image.image_id}")
        regions = list(image.regions)
        rng.shuffle(regions)
        meta = meta_json(image.meta)
        for k, (start, stop) in enumerate(balanced_chunks(len(regions), self.max_turns)):
            chunk = regions[start:stop]
            yield self.make_row(
                key=f"{image.image_id}:{k}", split=split, task=TASK, variant=self.layout, image=image.path,
                image_id=str(image.image_id), width=image.width, height=image.height, regions=chunk,
                conversations=caption_turns([r["label"] for r in chunk], REGION_CAPTION, rng), meta=meta)

    def _eval_rows(self, split: str, image: _Image) -> Iterator[dict[str, Any]]:
        meta = meta_json(image.meta)
        for item in image.regions:
            key = f"{image.image_id}:{item['source_id']}"
            rng = row_rng(self.seed, f"{split}:{key}")
            yield self.make_row(
                key=key, split=split, task=TASK, variant=self.layout, image=image.path,
                image_id=str(image.image_id), width=image.width, height=image.height, regions=[item],
                conversations=caption_turns([item["label"]], REGION_CAPTION, rng), references=[item["label"]],
                meta=meta)

    def _regions(self, split: str, where: str, image_id: Any, width: int, height: int,
                 raw_regions: list[tuple[Any, Any, Any]]) -> list[dict[str, Any]]:
        """``(region id, xywh box, phrase)`` -> checked regions; a bad one is a counted skip.

        This is the per-region hot path of a 5.4 M-region build: no context manager, the skip location is
        formatted only when a region is actually skipped, and :func:`_plain_box` spares the general box check
        for the integer boxes inside the image that make up nearly all of Visual Genome.
        """
        regions = []
        seen: set[Any] = set()
        for region_id, box, phrase in raw_regions:
            try:
                if type(region_id) is not int:  # the release's ids are ints: only others need the full check
                    record_id(region_id, "region id")
                if region_id in seen:
                    raise SkipRecord("duplicate_id", f"region id {region_id} appears twice in image {image_id}")
                label = phrase.strip() if isinstance(phrase, str) else ""
                if not label:
                    raise SkipRecord("empty_phrase", f"phrase {phrase!r}")
                bbox = _plain_box(box, width, height) or checked_box(xywh_to_xyxy(box), width, height)
            except SkipRecord as error:
                self.report.skip(split, error, f"{where} region id={region_id}")
                continue
            seen.add(region_id)
            regions.append(region(bbox, label=label, source_id=region_id))
        return regions

    def _image_path(self, folder: str, name: str) -> str:
        """``folder/name`` under the raw root; each folder is resolved once, a name must be a plain file name.

        Resolving every one of 108,077 image paths (``relative_image_path``) costs a dozen ``lstat`` calls each.
        """
        if folder not in self._folders:
            self._folders[folder] = relative_image_path(folder) if folder else ""
        if not _PLAIN_NAME.match(name):
            raise SkipRecord("unsafe_image_path", f"{name!r} is not a plain file name")
        checked = self._folders[folder]
        return f"{checked}/{name}" if checked else name

    # ----- the v1.2 release -------------------------------------------------------------------------------------
    def _held_out_ids(self) -> set[int]:
        """The ``test_image_ids`` file: one integer image id per line (blank lines and ``#`` comments allowed)."""
        if self._held_out is None:
            self._held_out = set()
            option = self.options["test_image_ids"]
            if option:
                path = Path(option) if Path(option).is_absolute() else self.raw_root / option
                self.report.add_input(path)
                for number, line in enumerate(read_text(path).splitlines(), start=1):
                    text = line.split("#", 1)[0].strip()
                    if not text:
                        continue
                    if not text.isdigit():
                        raise SourceFileError(path, f"{text!r} is not an image id", position=f"line {number}",
                                              expected="one integer Visual Genome image id per line")
                    self._held_out.add(int(text))
        return self._held_out

    def _release_units(self, split: str) -> Iterator[tuple[Any, Any, Any]]:
        held_out = self._held_out_ids()
        want_held_out = split == "test"
        self.report.add_input(self.image_data_path)
        self.report.add_input(self.regions_path)
        seen: set[Any] = set()
        pairs = zip_longest(iter_json_array(self.image_data_path), iter_json_array(self.regions_path),
                            fillvalue=_END)
        for position, (info, record) in enumerate(pairs):
            image_id = self._zipped_id(info, record, position)
            if (image_id in held_out) != want_held_out:
                continue
            if image_id in seen:
                self.report.skip(split, SkipRecord("duplicate_id", f"image id {image_id} appears twice"),
                                 f"{self.regions_path.name} image id={image_id}")
                continue
            seen.add(image_id)
            yield info, record, image_id

    def _release_image_of(self, split: str, info: Any, record: Any, image_id: Any) -> _Image | None:
        """One release image with its checked regions, or ``None`` when the image itself was skipped."""
        where = f"{self.regions_path.name} image id={image_id}"
        image = self.attempt(split, where, self._release_image, info, record, image_id)
        if image is None:
            return None
        raw = []
        for item in record["regions"]:
            try:
                raw.append(_release_region(item, image_id))
            except SkipRecord as error:
                item_id = item.get("region_id", item.get("id")) if isinstance(item, dict) else "?"
                self.report.skip(split, error, f"{where} region id={item_id}")
        image.regions = self._regions(split, where, image_id, image.width, image.height, raw)
        return image

    def _zipped_id(self, info: Any, record: Any, position: int) -> Any:
        """The image id shared by entry ``position`` of both files; anything else is a :class:`SourceFileError`."""
        expected = "entry i of region_descriptions.json to describe entry i of image_data.json"
        if record is _END:
            raise SourceFileError(self.regions_path, f"ends after {position} records while image_data.json "
                                  "continues", position=f"record {position}", expected=expected)
        if info is _END:
            raise SourceFileError(self.regions_path, f"has more records than the {position} images of "
                                  "image_data.json", position=f"record {position}", expected=expected)
        image_id = info.get("image_id", info.get("id")) if isinstance(info, dict) else None
        record_id = record.get("id", record.get("image_id")) if isinstance(record, dict) else None
        if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise SourceFileError(self.image_data_path, f"the record's image_id is {image_id!r}",
                                  position=f"record {position}", expected="{'image_id': int, ...}")
        if record_id != image_id:
            raise SourceFileError(self.regions_path, f"record {position} is image {record_id!r} but entry "
                                  f"{position} of image_data.json is image {image_id!r}",
                                  position=f"record {position}", expected=expected)
        return image_id

    def _release_image(self, info: dict[str, Any], record: dict[str, Any], image_id: Any) -> _Image:
        require_keys(info, ("width", "height"), "image_data entry")
        require_keys(record, ("regions",), "region_descriptions entry")
        if not isinstance(record["regions"], list):
            raise SkipRecord("wrong_record_type", f"'regions' is {type(record['regions']).__name__}")
        width, height = _image_size(info)
        url = info.get("url") or info.get("image_url") or ""
        if not isinstance(url, str):
            raise SkipRecord("unsafe_image_path", f"url {url!r} is not a string")
        folder, name = url.rsplit("/", 2)[-2:] if url.count("/") >= 2 else ("VG_100K", f"{image_id}.jpg")
        meta = {"layout": "release", "vg_image_id": image_id, "coco_id": info.get("coco_id"),
                "flickr_id": info.get("flickr_id")}
        return _Image(image_id, width, height, self._image_path(folder, name), meta, [])

    # ----- GRiT's COCO-format files -------------------------------------------------------------------------------
    def _grit_images(self, split: str) -> Iterator[_Image]:
        path = self._grit_path(split)
        self.report.add_input(path)
        images: dict[Any, dict[str, Any]] = {}
        for info in iter_coco_records(path, "images"):
            with self.skipping(split, f"{path.name} image id={info.get('id') if isinstance(info, dict) else '?'}"):
                require_keys(info, ("id", "file_name", "width", "height"), "image")
                if record_id(info["id"], "image id") in images:
                    raise SkipRecord("duplicate_id", f"image id {info['id']} appears twice")
                _image_size(info)
                images[info["id"]] = info
        if not images:
            raise SourceFileError(path, "no image records", expected="a COCO-format object with a non-empty 'images' list")

        raw: dict[Any, list[tuple[Any, Any, Any]]] = defaultdict(list)
        for ann in iter_coco_records(path, "annotations"):
            try:
                require_keys(ann, ("id", "image_id", "bbox", "caption"), "annotation")
                record_id(ann["id"], "annotation id")
                if record_id(ann["image_id"], "image_id") not in images:
                    raise SkipRecord("missing_image", f"image id {ann['image_id']} is not in 'images'")
            except SkipRecord as error:
                self.report.skip(split, error, f"{path.name} annotation id={ann.get('id') if isinstance(ann, dict) else '?'}")
                continue
            raw[ann["image_id"]].append((ann["id"], ann["bbox"], ann["caption"]))

        image_dir = self._grit_image_dir()
        for image_id in sorted(images, key=lambda value: (isinstance(value, str), value)):
            info = images.pop(image_id)
            where = f"{path.name} image id={image_id}"
            folder, _, name = f"{image_dir}/{info['file_name']}".strip("/").rpartition("/")
            image_path = self.attempt(split, where, self._image_path, folder, name)
            if image_path is None:
                continue
            width, height = _image_size(info)
            meta = {"layout": "grit", "vg_image_id": image_id, "coco_id": info.get("coco_id"),
                    "flickr_id": info.get("flickr_id")}
            regions = self._regions(split, where, image_id, width, height, raw.pop(image_id, []))
            yield _Image(image_id, width, height, image_path, meta, regions)


def _release_region(item: Any, image_id: Any) -> tuple[Any, tuple[Any, Any, Any, Any], Any]:
    """``(region id, xywh, phrase)`` of a release region; v1.0 names (``id``, ``image``) are accepted."""
    if not isinstance(item, dict):
        raise SkipRecord("wrong_record_type", f"region is {type(item).__name__}")
    try:
        region_id = item["region_id"] if "region_id" in item else item["id"]
        box = (item["x"], item["y"], item["width"], item["height"])
        phrase = item["phrase"]
    except KeyError as exc:
        raise SkipRecord("missing_key", f"region lacks {exc.args[0]!r}") from None
    owner = item.get("image_id", item.get("image"))
    if owner is not None and owner != image_id:
        raise SkipRecord("image_mismatch", f"region {region_id} names image {owner} inside image {image_id}")
    return region_id, box, phrase


def _plain_box(box: tuple[Any, Any, Any, Any], width: int, height: int) -> list[float] | None:
    """The xyxy box of an integer xywh box at least 1 px wide lying inside the image, else ``None``.

    For such a box :func:`checked_box` would return exactly this; anything else (floats, strings, boxes to
    clip or skip) goes through the general check.
    """
    if not (isinstance(box, (list, tuple)) and len(box) == 4):
        return None  # GRiT's bbox may be anything: the general check names the problem
    x, y, w, h = box
    if (type(x) is int and type(y) is int and type(w) is int and type(h) is int
            and x >= 0 and y >= 0 and w >= 1 and h >= 1 and x + w <= width and y + h <= height):
        return [float(x), float(y), float(x + w), float(y + h)]
    return None


def _image_size(info: dict[str, Any]) -> tuple[int, int]:
    return image_side(info["width"], "width"), image_side(info["height"], "height")
