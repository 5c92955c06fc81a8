"""RefCOCO / RefCOCO+ / RefCOCOg -> referring-expression region captions.

Two layouts of the same annotations (docs/formats.md#refcoco-family):

* ``refer``: the original release, ``<root>/<dataset>/refs(<split_by>).p`` (a Python-2 pickle of ref dicts,
  loaded with the restricted unpickler) plus ``<root>/<dataset>/instances.json`` (COCO format; a ref has no
  box of its own, its ``ann_id`` names the instance annotation).
* ``mdetr``: MDETR's ``<root>/mdetr_annotations/finetune_<dataset>_<split>.json`` (COCO format, one image
  entry per (ref, sentence); the annotation's ``original_id`` is the COCO ``ann_id``), which GPT4RoI read.
  MDETR converted refs(unc) for RefCOCO / RefCOCO+ and refs(umd) for RefCOCOg, so that is the variant.

Training rows: one per (ref, sentence). Evaluation rows (validation, test, testA, testB): one per ref, all
of its sentences in ``references`` and the first one as the assistant's answer. A ref is identified by its
annotation id in the MDETR layout (``refer.py`` maps every ``ann_id`` to exactly one ref).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from builders.boxes import checked_box, xywh_to_xyxy
from builders.errors import SkipRecord, SourceFileError
from builders.readers.cocofile import CocoIndex, record_id
from builders.readers.jsonio import require_keys
from builders.readers.paths import relative_image_path
from builders.readers.safe_pickle import safe_load_pickle
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, region
from builders.sources.captions import caption_turns
from builders.sources.templates import REGION_CAPTION, REGION_CAPTION_SHORT, REGION_CAPTION_SHORT_APPEARANCE

SPLIT_ORDER = ("train", "validation", "test", "testA", "testB")
RAW_TO_SPLIT = {"train": "train", "val": "validation", "test": "test", "testA": "testA", "testB": "testB"}
SPLIT_TO_RAW = {schema: raw for raw, schema in RAW_TO_SPLIT.items()}
LAYOUTS = ("auto", "refer", "mdetr")
IMAGE_DIR = "images/mscoco/images/train2014"
# How images are named on disk: "2014" = the file_name of the annotations (COCO_train2014_000000000009.jpg),
# "2017" = COCO 2017's <12-digit id>.jpg, as GPT4RoI reads them from its coco_imgs/ folder (same pictures).
IMAGE_NAMES = ("2014", "2017")


class _RefExpBuilder(RegionBuilder):
    """Shared conversion of the three referring-expression datasets; subclasses set the dataset facts."""

    TASK: ClassVar[str] = ""
    TEMPLATES: ClassVar[list[str]] = []
    MDETR_VARIANT: ClassVar[str] = ""
    LICENSE = "Apache-2.0 (refer annotations); COCO images under Flickr terms"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.split_by = str(self.options["split_by"])
        if self.options["layout"] not in LAYOUTS:
            raise ValueError(f"{self.SOURCE}: layout must be one of {LAYOUTS}, got {self.options['layout']!r}")
        if self.options["layout"] == "mdetr" and self.split_by != self.MDETR_VARIANT:
            raise ValueError(f"{self.SOURCE}: MDETR converted refs({self.MDETR_VARIANT}).p only; "
                             f"split_by={self.split_by!r} needs layout=refer")
        if str(self.options["image_names"]) not in IMAGE_NAMES:
            raise ValueError(f"{self.SOURCE}: image_names must be one of {IMAGE_NAMES}, got {self.options['image_names']!r}")
        self.layout = self._resolve_layout()
        self._refs: list[Any] | None = None
        self._unplaced_counted = False

    # ----- layout and files ----------------------------------------------------------------------------
    @property
    def refs_path(self) -> Path:
        return self.raw_root / self.SOURCE / f"refs({self.split_by}).p"

    @property
    def instances_path(self) -> Path:
        return self.raw_root / self.SOURCE / "instances.json"

    def mdetr_path(self, split: str) -> Path:
        return self.raw_root / "mdetr_annotations" / f"finetune_{self.SOURCE}_{SPLIT_TO_RAW[split]}.json"

    def _resolve_layout(self) -> str:
        wanted = self.options["layout"]
        if wanted != "auto":
            return wanted
        if self.refs_path.is_file():
            return "refer"
        if self.split_by == self.MDETR_VARIANT and any(self.mdetr_path(s).is_file() for s in SPLIT_ORDER):
            return "mdetr"
        return "refer"

    def _load_refs(self) -> list[Any]:
        if self._refs is None:
            if not self.refs_path.is_file():
                raise SourceFileError(self.refs_path, "file not found", expected=f"refs({self.split_by}).p of "
                                      f"the refer release under <raw_root>/{self.SOURCE}/")
            refs = safe_load_pickle(self.refs_path)
            if not isinstance(refs, list):
                raise SourceFileError(self.refs_path, f"the pickle holds a {type(refs).__name__}",
                                      expected="a list of ref dicts")
            self.report.add_input(self.refs_path)
            self._refs = refs
        return self._refs

    def available_splits(self) -> list[str]:
        if self.layout == "mdetr":
            return [split for split in SPLIT_ORDER if self.mdetr_path(split).is_file()]
        if not self.refs_path.is_file():
            return []
        present = {RAW_TO_SPLIT.get(_raw_split(ref)) for ref in self._load_refs()}
        return [split for split in SPLIT_ORDER if split in present]

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        if self.layout == "mdetr":
            return self._mdetr_rows(split)
        return self._refer_rows(split)

    # ----- the refer layout ------------------------------------------------------------------------------
    def _refer_rows(self, split: str) -> Iterator[dict[str, Any]]:
        refs = self._load_refs()
        self.report.add_input(self.instances_path)
        index = CocoIndex.load(self.instances_path, report=self.report, split=split)
        raw_split = SPLIT_TO_RAW[split]
        self._count_unplaced_refs(refs, split)
        wanted = []
        seen: set[Any] = set()
        for position, ref in enumerate(refs):
            if _raw_split(ref) != raw_split:
                continue
            with self.skipping(split, f"{self.refs_path.name} ref_id={ref.get('ref_id')} (item {position})"):
                require_keys(ref, ("ref_id", "ann_id", "image_id", "sentences"), "ref")
                if not isinstance(ref["ref_id"], int):
                    raise SkipRecord("wrong_record_type", f"ref_id {ref['ref_id']!r} is not an integer")
                record_id(ref["ann_id"], "ann_id"), record_id(ref["image_id"], "image_id")
                if ref["ref_id"] in seen:
                    raise SkipRecord("duplicate_id", f"ref_id {ref['ref_id']} appears twice")
                seen.add(ref["ref_id"])
                wanted.append(ref)
        wanted.sort(key=lambda ref: ref["ref_id"])

        for ref in wanted:
            where = f"{self.refs_path.name} ref_id={ref['ref_id']}"
            prepared = self.attempt(split, where, self._refer_target, ref, index, split, where)
            if prepared is None:
                continue
            ann, image, target, image_path, sentences = prepared
            meta = {"layout": "refer", "ref_id": ref["ref_id"], "ann_id": ann["id"], "coco_image_id": image["id"],
                    "category_id": ann.get("category_id"), "ref_file_name": ref.get("file_name", "")}
            yield from self._rows(split, str(ref["ref_id"]), self.split_by, image, image_path, target,
                                  sentences, meta, "sent_id")

    def _count_unplaced_refs(self, refs: list[Any], split: str) -> None:
        """Items that belong to no split (not a dict, unknown ``split``) are counted once, in the first split built."""
        if self._unplaced_counted:
            return
        self._unplaced_counted = True
        for position, ref in enumerate(refs):
            with self.skipping(split, f"{self.refs_path.name} item {position}"):
                if not isinstance(ref, dict):
                    raise SkipRecord("wrong_record_type", f"item is a {type(ref).__name__}, expected a ref dict")
                if _raw_split(ref) not in RAW_TO_SPLIT:
                    raise SkipRecord("unknown_split", f"ref_id {ref.get('ref_id')} has split {ref.get('split')!r}")

    def _refer_target(self, ref: dict[str, Any], index: CocoIndex, split: str, where: str) -> tuple:
        """The ref's annotation, image, region, image path and sentences; :class:`SkipRecord` if unusable."""
        ann = index.anns_by_id.get(ref["ann_id"])
        if ann is None:
            raise SkipRecord("missing_annotation", f"ann_id {ref['ann_id']} is not in instances.json")
        if ann["image_id"] != ref["image_id"]:
            raise SkipRecord("image_mismatch", f"ref image_id {ref['image_id']} but annotation {ann['id']} "
                             f"is on image {ann['image_id']}")
        image = index.images_by_id[ann["image_id"]]
        target = self._region(ann, ann["id"], image, index)
        image_path = self._image_path(image, image["id"])
        sentences = self._refer_sentences(ref, split, where)
        if not sentences:
            raise SkipRecord("no_sentences", "the ref has no usable sentence")
        return ann, image, target, image_path, sentences

    def _refer_sentences(self, ref: dict[str, Any], split: str, where: str) -> list[tuple[Any, str]]:
        """``(sent_id, text)`` of a ref's usable sentences; an empty or malformed one is a counted skip."""
        usable = []
        sentences = ref["sentences"] if isinstance(ref["sentences"], list) else []
        for position, sentence in enumerate(sentences):
            with self.skipping(split, f"{where} sentence {position}"):
                if not isinstance(sentence, dict):
                    raise SkipRecord("wrong_record_type", f"sentence is {type(sentence).__name__}")
                text = sentence.get("sent", sentence.get("raw"))
                if not isinstance(text, str) or not text.strip():
                    raise SkipRecord("empty_sentence", f"sentence {sentence.get('sent_id', position)} has no text")
                usable.append((sentence.get("sent_id", position), text.strip()))
        return usable

    # ----- the MDETR layout --------------------------------------------------------------------------------
    def _mdetr_rows(self, split: str) -> Iterator[dict[str, Any]]:
        path = self.mdetr_path(split)
        self.report.add_input(path)
        index = CocoIndex.load(path, report=self.report, split=split)
        groups: dict[Any, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
        for entry in index.images():
            with self.skipping(split, f"{path.name} image id={entry['id']}"):
                require_keys(entry, ("caption", "original_id"), "image")
                record_id(entry["original_id"], "original_id")
                anns = index.annotations_of(entry["id"])
                if len(anns) != 1:
                    raise SkipRecord("annotation_count", f"{len(anns)} annotations, expected exactly 1 per sentence")
                if not isinstance(entry["caption"], str) or not entry["caption"].strip():
                    raise SkipRecord("empty_sentence", "empty caption")
                groups[record_id(anns[0].get("original_id", anns[0]["id"]), "original_id")].append((entry, anns[0]))

        for ann_id, members in groups.items():
            entry, ann = members[0]
            prepared = self.attempt(split, f"{path.name} original ann_id={ann_id}", self._mdetr_target,
                                    ann, ann_id, entry, index)
            if prepared is None:
                continue
            target, image_path = prepared
            sentences = [(k, member_entry["caption"].strip()) for k, (member_entry, _) in enumerate(members)]
            meta = {"layout": "mdetr", "ann_id": ann_id, "coco_image_id": entry["original_id"],
                    "category_id": ann.get("category_id"), "mdetr_image_ids": [e["id"] for e, _ in members]}
            yield from self._rows(split, f"ann{ann_id}", self.MDETR_VARIANT, entry, image_path, target,
                                  sentences, meta, "sentence_index")

    def _mdetr_target(self, ann: dict[str, Any], ann_id: Any, entry: dict[str, Any],
                      index: CocoIndex) -> tuple[dict[str, Any], str]:
        """The region of an MDETR sentence group and its image's path; :class:`SkipRecord` if unusable."""
        return self._region(ann, ann_id, entry, index), self._image_path(entry, entry["original_id"])

    # ----- shared ------------------------------------------------------------------------------------------
    def _image_path(self, image: dict[str, Any], coco_id: Any) -> str:
        """The picture's path: the annotation's 2014 ``file_name``, or ``<12-digit COCO id>.jpg`` (2017 names)."""
        if str(self.options["image_names"]) == "2017":
            if not isinstance(coco_id, int) or isinstance(coco_id, bool):
                raise SkipRecord("bad_id", f"COCO image id {coco_id!r} is not an integer (image_names=2017)")
            return relative_image_path(f"{self.options['image_dir']}/{coco_id:012d}.jpg")
        return CocoIndex.image_path(image, self.options["image_dir"])

    def _region(self, ann: dict[str, Any], ann_id: Any, image: dict[str, Any], index: CocoIndex) -> dict[str, Any]:
        label = index.category_name(ann)
        bbox = checked_box(xywh_to_xyxy(ann["bbox"]), int(image["width"]), int(image["height"]))
        return region(bbox, label=label, source_id=ann_id, segmentation=ann.get("segmentation"))

    def _rows(self, split: str, key: str, variant: str, image: dict[str, Any], image_path: str,
              target: dict[str, Any], sentences: list[tuple[Any, str]], meta: dict[str, Any],
              sentence_key: str) -> Iterator[dict[str, Any]]:
        """Train: one row per sentence (``<key>:<sentence id>``); evaluation: one row per ref (``<key>``)."""
        common = {"split": split, "task": self.TASK, "variant": variant, "image": image_path,
                  "image_id": str(meta["coco_image_id"]), "width": int(image["width"]),
                  "height": int(image["height"]), "regions": [target]}
        if split == "train":
            for sentence_id, text in sentences:
                row_key = f"{key}:{sentence_id}"
                rng = row_rng(self.seed, f"{split}:{row_key}")
                yield self.make_row(key=row_key, conversations=caption_turns([text], self.TEMPLATES, rng),
                                    meta={**meta, sentence_key: sentence_id}, **common)
        else:
            rng = row_rng(self.seed, f"{split}:{key}")
            texts = [text for _, text in sentences]
            yield self.make_row(key=key, conversations=caption_turns(texts[:1], self.TEMPLATES, rng),
                                references=texts, meta={**meta, f"{sentence_key}s": [s for s, _ in sentences]},
                                **common)


class RefCocoBuilder(_RefExpBuilder):
    SOURCE = "refcoco"
    DESCRIPTION = "RefCOCO referring expressions as short region captions."
    CITATION = "Kazemzadeh et al., ReferItGame, EMNLP 2014; Yu et al., Modeling Context in Referring Expressions, ECCV 2016."
    TASK = "region_caption_short"
    TEMPLATES = REGION_CAPTION_SHORT
    MDETR_VARIANT = "unc"
    DEFAULT_OPTIONS = {"layout": "auto", "split_by": "unc", "image_dir": IMAGE_DIR, "image_names": "2014"}


class RefCocoPlusBuilder(_RefExpBuilder):
    """RefCOCO+ forbade absolute-position words, so its prompts ask for appearance only."""

    SOURCE = "refcoco+"
    DESCRIPTION = "RefCOCO+ appearance-only referring expressions as short region captions."
    CITATION = "Yu et al., Modeling Context in Referring Expressions, ECCV 2016."
    TASK = "region_caption_short"
    TEMPLATES = REGION_CAPTION_SHORT_APPEARANCE
    MDETR_VARIANT = "unc"
    DEFAULT_OPTIONS = {"layout": "auto", "split_by": "unc", "image_dir": IMAGE_DIR, "image_names": "2014"}


class RefCocogBuilder(_RefExpBuilder):
    SOURCE = "refcocog"
    DESCRIPTION = "RefCOCOg (Google-RefExp) long referring expressions as region captions."
    CITATION = "Mao et al., Generation and Comprehension of Unambiguous Object Descriptions, CVPR 2016; Nagaraja et al., ECCV 2016 (umd split)."
    TASK = "region_caption"
    TEMPLATES = REGION_CAPTION
    MDETR_VARIANT = "umd"
    DEFAULT_OPTIONS = {"layout": "auto", "split_by": "umd", "image_dir": IMAGE_DIR, "image_names": "2014"}


def _raw_split(ref: Any) -> str | None:
    """A ref's split name as the pickle writes it (``train``, ``val``, ``testA`` ...), or ``None`` when the item
    is not a ref dict or its ``split`` is not a string (a list or a number cannot name a split)."""
    split = ref.get("split") if isinstance(ref, dict) else None
    return split if isinstance(split, str) else None
