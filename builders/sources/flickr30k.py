"""Flickr30K Entities -> ``multi_region_caption`` rows (docs/formats.md#flickr30k-entities).

One row per (image, caption). Turn 1 asks for a sentence covering every phrase region of the caption and is
answered with the de-bracketed caption; each following turn asks which part of that description matches one
chain's region(s) and is answered with the chain's first phrase in the caption. ``notvisual`` phrases and
chains without a box are not regions; a caption left without regions is a counted skip. A chain with several
boxes becomes their union box (``boxes: merged``, the default, as in the Flickr30K Entities protocol and
MDETR's ``mergedGT``) or one region per box asked about in one turn (``boxes: separate``).

Layouts:

* ``entities``: ``Annotations/<id>.xml`` + ``Sentences/<id>.txt`` for the ids of ``{train,val,test}.txt``.
  XML boxes are 1-based inclusive (``voc_to_xyxy``). An id whose files are missing or malformed is a counted
  skip: each image's files are one record of a 31,783-image release.
* ``mdetr``: MDETR's ``final_flickr_{mergedGT,separateGT}_<split>.json`` (COCO format, one image entry per
  caption, ``tokens_positive`` character spans, ``height``/``width`` as strings). MDETR kept the 1-based
  ``xmin``/``ymin`` and ``w = xmax - xmin``, so ``[x, y, x + w, y + h]`` is again a 1-based inclusive box and
  both layouts give identical regions. Boxes of one annotation that share spans form one turn.

``UNRELATED_CAPTIONS`` (when present) drops the captions the authors marked as unrelated to their image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from builders.boxes import checked_box, union_box, voc_to_xyxy, xywh_to_xyxy
from builders.errors import SkipRecord
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.readers.cocofile import CocoIndex
from builders.readers.flickr_entities import (
    Caption,
    EntitiesFiles,
    EntityBoxes,
    parse_caption,
    read_split_ids,
    read_unrelated_captions,
    xml_box,
)
from builders.readers.jsonio import require_keys
from builders.readers.paths import relative_image_path
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, region, turn
from builders.sources.templates import MULTI_REGION_DESCRIBE, MULTI_REGION_MATCH, join_regions, pick

TASK = "multi_region_caption"
SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}
LAYOUTS = ("auto", "entities", "mdetr")
MDETR_DIR = "mdetr_annotations"
BOX_MODES = ("merged", "separate")

# One follow-up turn: the phrase that answers it and the regions it asks about.
Group = tuple[str, list[dict[str, Any]]]


class Flickr30kBuilder(RegionBuilder):
    SOURCE = "flickr30k"
    DESCRIPTION = "Flickr30K Entities captions with their phrase regions as multi-region captions."
    LICENSE = "Flickr30K Entities annotations: research use, cite the paper; images under Flickr terms"
    CITATION = "Plummer et al., Flickr30k Entities, ICCV 2015 / IJCV 2017."
    DEFAULT_OPTIONS = {"layout": "auto", "boxes": "merged", "image_dir": "flickr30k-images"}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.options["layout"] not in LAYOUTS:
            raise ValueError(f"flickr30k: layout must be one of {LAYOUTS}, got {self.options['layout']!r}")
        if self.options["boxes"] not in BOX_MODES:
            raise ValueError(f"flickr30k: boxes must be one of {BOX_MODES}, got {self.options['boxes']!r}")
        self.variant = self.options["boxes"]
        self.layout = self._resolve_layout()
        self._unrelated: set[tuple[str, int]] | None = None
        self._files: EntitiesFiles | None = None

    def _resolve_layout(self) -> str:
        if self.options["layout"] != "auto":
            return self.options["layout"]
        if any(self._mdetr_path(split).is_file() for split in SPLIT_FILES) and not (self.raw_root / "Sentences").is_dir():
            return "mdetr"
        return "entities"

    def _mdetr_path(self, split: str) -> Path:
        """MDETR's file in ``mdetr_annotations/`` (where MDETR's download and GPT4RoI put it), else the root."""
        kind = "mergedGT" if self.variant == "merged" else "separateGT"
        name = f"final_flickr_{kind}_{SPLIT_FILES[split]}.json"
        in_folder = self.raw_root / MDETR_DIR / name
        return in_folder if in_folder.is_file() else self.raw_root / name

    def available_splits(self) -> list[str]:
        if self.layout == "mdetr":
            return [split for split in SPLIT_FILES if self._mdetr_path(split).is_file()]
        return [split for split, name in SPLIT_FILES.items() if (self.raw_root / f"{name}.txt").is_file()]

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        return self._mdetr_rows(split) if self.layout == "mdetr" else self._entities_rows(split)

    def _unrelated_captions(self, split: str) -> set[tuple[str, int]]:
        """The captions marked unrelated; the file's unreadable lines are counted once, in the first split."""
        if self._unrelated is None:
            self._unrelated = set()
            path = self.raw_root / "UNRELATED_CAPTIONS"
            if path.is_file():
                self.report.add_input(path)
                self._unrelated, bad_lines = read_unrelated_captions(path)
                for number in bad_lines:
                    self.report.skip(split, SkipRecord("unreadable_unrelated_line", "not '<image id> <1-5>'"),
                                     f"{path.name} line {number}")
        return self._unrelated

    # ----- the original release ---------------------------------------------------------------------------------
    def _entities_rows(self, split: str) -> Iterator[dict[str, Any]]:
        split_path = self.raw_root / f"{SPLIT_FILES[split]}.txt"
        self.report.add_input(split_path)
        unrelated = self._unrelated_captions(split)
        for image_id in read_split_ids(split_path):
            loaded = self.attempt(split, f"image {image_id}", self._load_image, image_id)
            if loaded is None:
                continue
            lines, entities, image_path = loaded
            chain_boxes = self._checked_chain_boxes(split, image_id, entities)
            for index, line in enumerate(lines):
                row = self.attempt(split, f"Sentences/{image_id}.txt caption {index}", self._entities_row, split,
                                   image_id, index, line, unrelated, entities, image_path, chain_boxes)
                if row is not None:
                    yield row

    def _entities_row(self, split: str, image_id: str, index: int, line: str, unrelated: set[tuple[str, int]],
                      entities: EntityBoxes, image_path: str,
                      chain_boxes: dict[str, list[list[float]]]) -> dict[str, Any]:
        """The row of caption ``index`` of an image (its line in ``Sentences/<image_id>.txt``)."""
        if (image_id, index) in unrelated:
            raise SkipRecord("unrelated_caption", "listed in UNRELATED_CAPTIONS")
        caption = parse_caption(line)
        groups, phrases = self._entity_groups(caption, chain_boxes)
        return self._row(split, f"{image_id}:{index}", image_path, entities.width, entities.height,
                         caption.sentence, groups,
                         {"layout": "entities", "flickr_id": int(image_id), "sentence_id": index, "phrases": phrases})

    def _load_image(self, image_id: str) -> tuple[list[str], EntityBoxes, str]:
        if self._files is None:
            self._files = EntitiesFiles(self.raw_root)
        lines, entities = self._files.read(image_id)
        image_path = relative_image_path(f"{self.options['image_dir']}/{image_id}.jpg")
        return lines, entities, image_path

    def _checked_chain_boxes(self, split: str, image_id: str, entities: EntityBoxes) -> dict[str, list[list[float]]]:
        """Every chain's boxes converted to the schema once per image; a bad box is a counted skip."""
        checked: dict[str, list[list[float]]] = {}
        for chain, raw_boxes in entities.boxes.items():
            good = []
            for raw in raw_boxes:
                with self.skipping(split, f"Annotations/{image_id}.xml chain {chain} box {raw}"):
                    good.append(checked_box(voc_to_xyxy(xml_box(raw)), entities.width, entities.height))
            if good:
                checked[chain] = good
        return checked

    def _entity_groups(self, caption: Caption, chain_boxes: dict[str, list[list[float]]]
                       ) -> tuple[list[Group], list[dict[str, Any]]]:
        """One group per boxed chain, in order of first mention; plus the phrases kept for ``meta``."""
        first_mention: dict[str, Any] = {}
        phrases = []
        for phrase in caption.phrases:
            if not phrase.visual or phrase.chain_id not in chain_boxes:
                continue
            first_mention.setdefault(phrase.chain_id, phrase)
            phrases.append({"chain_id": phrase.chain_id, "text": phrase.text, "span": [phrase.start, phrase.end],
                            "types": list(phrase.types)})
        groups = []
        for chain, phrase in first_mention.items():
            boxes = chain_boxes[chain]
            if self.variant == "merged":
                boxes = [union_box(boxes)]
            groups.append((phrase.text, [region(box, label=phrase.text, source_id=chain) for box in boxes]))
        return groups, phrases

    # ----- MDETR's COCO-format conversion -------------------------------------------------------------------------
    def _mdetr_rows(self, split: str) -> Iterator[dict[str, Any]]:
        path = self._mdetr_path(split)
        self.report.add_input(path)
        index = CocoIndex.load(path, report=self.report, split=split, require_categories=False, string_sizes=True)
        unrelated = self._unrelated_captions(split)
        seen: set[str] = set()
        for entry in index.images():
            where = f"{path.name} image id={entry['id']}"
            row = self.attempt(split, where, self._mdetr_row, split, where, entry, index, unrelated, seen)
            if row is not None:
                yield row

    def _mdetr_row(self, split: str, where: str, entry: dict[str, Any], index: CocoIndex,
                   unrelated: set[tuple[str, int]], seen: set[str]) -> dict[str, Any]:
        """The row of one MDETR image entry, which is one caption of a Flickr30K image."""
        require_keys(entry, ("caption", "original_img_id", "sentence_id"), "image")
        flickr_id, sentence_id = _whole_number(entry["original_img_id"]), _whole_number(entry["sentence_id"])
        if not isinstance(entry["caption"], str):
            raise SkipRecord("wrong_record_type", f"caption is {type(entry['caption']).__name__}, expected a string")
        key = f"{flickr_id}:{sentence_id}"
        if key in seen:
            raise SkipRecord("duplicate_id", f"caption {sentence_id} of image {flickr_id} appears twice")
        seen.add(key)
        if (str(flickr_id), sentence_id) in unrelated:
            raise SkipRecord("unrelated_caption", "listed in UNRELATED_CAPTIONS")
        width, height = entry["width"], entry["height"]  # checked by CocoIndex.load
        groups, phrases = self._mdetr_groups(split, where, entry, index, width, height)
        image_path = relative_image_path(f"{self.options['image_dir']}/{flickr_id}.jpg")
        return self._row(split, key, image_path, width, height, entry["caption"].strip(), groups,
                         {"layout": "mdetr", "flickr_id": flickr_id, "sentence_id": sentence_id,
                          "phrases": phrases})

    def _mdetr_groups(self, split: str, where: str, entry: dict[str, Any], index: CocoIndex, width: int,
                      height: int) -> tuple[list[Group], list[dict[str, Any]]]:
        """One group per chain, holding every box whose annotation names that chain, ordered by position.

        MDETR clustered the boxes of one caption at IoU >= 0.95 *across chains* and wrote one annotation per
        cluster: the last box, and the spans of every chain in it (a girl and her dress: one box, spans of "A
        girl" and "a black dress"). Grouping by annotation fuses those chains into one region named by the
        first span; :func:`_chains` splits an annotation's spans back into chains, so a cluster gives one
        region per (chain, box) again.
        """
        caption = entry["caption"]
        by_chain: dict[tuple[tuple[int, int], ...], list[dict[str, Any]]] = {}
        for ann in index.annotations_of(entry["id"]):
            with self.skipping(split, f"{where} annotation id={ann['id']}"):
                spans = _spans(ann.get("tokens_positive"), len(caption))
                bbox = checked_box(voc_to_xyxy(xywh_to_xyxy(ann["bbox"])), width, height)
                for chain in _chains(caption, spans):
                    text = caption[chain[0][0]:chain[0][1]].strip()
                    by_chain.setdefault(chain, []).append(region(bbox, label=text, source_id=ann["id"]))
        ordered = sorted(by_chain.items())
        groups = [(members[0]["label"], members) for _, members in ordered]
        phrases = [{"text": caption[s:e], "span": [s, e]} for spans, _ in ordered for s, e in spans]
        return groups, phrases

    # ----- one row -----------------------------------------------------------------------------------------------
    def _row(self, split: str, key: str, image_path: str, width: int, height: int, sentence: str,
             groups: list[Group], meta: dict[str, Any]) -> dict[str, Any]:
        if not groups:
            raise SkipRecord("no_regions", "no phrase of the caption has a box")
        rng = row_rng(self.seed, f"{split}:{key}")
        regions: list[dict[str, Any]] = []
        tokens_per_group = []
        for _, members in groups:
            tokens_per_group.append([region_token(len(regions) + k) for k in range(1, len(members) + 1)])
            regions += members
        all_tokens = [token for tokens in tokens_per_group for token in tokens]
        conversations = [turn("human", f"{IMAGE_TOKEN}\n{pick(rng, MULTI_REGION_DESCRIBE, regions=join_regions(all_tokens))}"),
                         turn("gpt", sentence)]
        for (phrase, _), tokens in zip(groups, tokens_per_group, strict=True):
            conversations += [turn("human", pick(rng, MULTI_REGION_MATCH, region=join_regions(tokens))),
                              turn("gpt", phrase)]
        return self.make_row(key=key, split=split, task=TASK, variant=self.variant, image=image_path,
                             image_id=key.split(":")[0], width=width, height=height, regions=regions,
                             conversations=conversations, references=[] if split == "train" else [sentence],
                             meta=meta)


def _spans(tokens_positive: Any, length: int) -> tuple[tuple[int, int], ...]:
    """MDETR's ``[[start, end], ...]`` as a hashable tuple; empty, non-integer or out-of-range spans are a skip."""
    if not isinstance(tokens_positive, list) or not all(
            isinstance(span, list) and len(span) == 2 and all(_is_int(v) for v in span) for span in tokens_positive):
        raise SkipRecord("bad_tokens_positive", f"tokens_positive={tokens_positive!r}")
    spans = tuple((s, e) for s, e in tokens_positive)
    if not spans or any(not 0 <= s < e <= length for s, e in spans):
        raise SkipRecord("bad_tokens_positive", f"tokens_positive={tokens_positive!r} for a {length}-character caption")
    return spans


def _chains(caption: str, spans: tuple[tuple[int, int], ...]) -> list[tuple[tuple[int, int], ...]]:
    """An MDETR annotation's spans split into chains: mentions sharing their last word are one chain.

    MDETR's files do not record chain ids. The mentions of one chain in one caption name the same thing
    ("A football player ... a player"); the chains of a cluster are different things ("A girl", "a black
    dress"). Spans are kept in ascending order within a chain; chains come in order of first mention.
    """
    chains: dict[str, list[tuple[int, int]]] = {}
    for start, end in sorted(set(spans)):
        words = caption[start:end].lower().split()
        chains.setdefault(words[-1] if words else "", []).append((start, end))
    return [tuple(members) for members in chains.values()]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole_number(value: Any) -> int:
    """An id of MDETR's image entries (``original_img_id``, ``sentence_id``): an integer, never a list or text."""
    if not _is_int(value) or value < 0:
        raise SkipRecord("bad_id", f"{value!r} is not a non-negative integer")
    return value
