"""VCR ``{train,val}.jsonl`` + per-image metadata -> ``region_reasoning``, ``vcr_qa`` and ``vcr_qar`` rows.

Every jsonl line is one question about one movie frame; the frame's metadata json holds one detector box
(xyxy pixels + score) and polygon per entry of the record's ``objects``; references in the token lists are
0-based indices into ``objects`` (docs/formats.md#vcr). One record gives up to five rows, one per *variant*:

``all`` (``region_reasoning``)
    Every object of the frame is a region (``<regionK>`` = object K-1). The first human turn lists all of
    them, then asks the question; the assistant gives the right answer, a second human turn asks why, and
    the assistant gives the right rationale. GPT4RoI's ``VCRDataset`` does the same but names the class of
    object N as ``objects[N]`` with N 1-based (one off); here the class is ``objects[index]`` of the 0-based
    index the tokens carry.
``single`` / ``multi`` (``region_reasoning``)
    Only the objects the *question* refers to are regions, numbered in order of first mention, each listed
    once (GPT4RoI's ``MultiVCRDataset`` repeats a box when a number occurs twice). ``single``: the question
    refers to exactly one object; ``multi``: to two or more. As in GPT4RoI's ``SingleVCRDataset`` /
    ``MultiVCRDataset`` the answer may only refer to objects of the question (otherwise the record is not a
    row of that variant: its answer would name an object without a region), and the rationale turn is kept
    only when its references are among them too. Unlike GPT4RoI, references are read from the token lists,
    not found by a digit regex in ``*_orig`` (which also matches numbers such as "2 people"), and an answer
    without any reference is allowed.
``qa`` / ``qar`` (``vcr_qa`` / ``vcr_qar``)
    GPT4RoI's multiple-choice prompt (docs/protocols.md#vcr-multiple-choice), built by
    :mod:`builders.readers.vcr_text`: every object is a region, references are 1-based numbers naming them, the four
    options are ``choices``, ``label`` is the right one, the assistant turn is its letter, e.g. ``(C)``. The
    paper's ``### Question:`` / ``### Answer:`` markers are the conversation template's role headers and are
    not part of the stored turns.

In human turns a reference becomes ``<regionK>`` (several indices: ``<region1> and <region2>``); in assistant
turns it becomes ``<class> at regionK`` (GPT4RoI's wording), so the answer names what the object is.

Skips (counted): a reference to an object index that the record or its metadata lacks
(``vcr_missing_object``), an empty ``objects`` list, metadata that cannot be read or disagrees with
``objects``, a bad box (only the variants whose regions include it), and a record without labels
(``unlabelled_item``). ``test.jsonl`` is not a split here: VCR's test labels are hidden, and neither a
reasoning row nor a multiple-choice row (whose ``label`` must name one of its ``choices``) can be built
without them, so a build of every split must not fail on a split that can never hold a row. A jsonl line
that is not JSON stops the build with an error naming the file and line; a split file without a single
record fails the build (docs/design.md#errors-and-reports).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from builders.boxes import checked_box
from builders.errors import SkipRecord, SourceFileError
from builders.limits import image_side
from builders.placeholders import IMAGE_TOKEN, region_token
from builders.readers import vcr_text
from builders.readers.jsonio import iter_jsonl, read_json, require_keys
from builders.readers.paths import relative_image_path, resolve_under
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, region, turn
from builders.sources.templates import REGION_REASONING_PREFIX, join_regions, pick

SPLIT_FILES = {"train": "train", "validation": "val"}  # test.jsonl: labels hidden, see the module docstring
VARIANTS = ("all", "single", "multi", "qa", "qar")
MC_TASKS = {"qa": "vcr_qa", "qar": "vcr_qar"}
RECORD_KEYS = ("objects", "img_fn", "metadata_fn", "question", "answer_choices", "rationale_choices", "annot_id")
FRAME_CACHE = 64  # the jsonl lists the questions of one frame together: each frame is read and converted once

RATIONALE_QUESTION = [
    "Why?",
    "Why do you think so?",
    "What makes you say that?",
    "How can you tell?",
    "What is your reasoning?",
    "Explain why that is the answer.",
    "What in the picture supports that answer?",
    "Can you justify your answer?",
    "What evidence leads you to that conclusion?",
    "Why is that the right answer?",
    "What is the basis for that answer?",
    "How did you reach that conclusion?",
    "Give the reason for your answer.",
    "What clues point to that?",
    "Explain your answer.",
    "Why would that be the case?",
    "What tells you that?",
    "Which details back up your answer?",
    "Walk me through your reasoning.",
    "What is the rationale behind that answer?",
]


class VcrBuilder(RegionBuilder):
    SOURCE = "vcr"
    DESCRIPTION = "Visual Commonsense Reasoning as region reasoning conversations and multiple-choice rows."
    LICENSE = "VCR dataset terms (non-commercial research only)"
    CITATION = "Zellers et al., From Recognition to Cognition: Visual Commonsense Reasoning, CVPR 2019."
    DEFAULT_OPTIONS = {"variants": list(VARIANTS), "image_dir": "vcr1images", "segmentation": True}

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        variants = self.options["variants"]
        variants = [variants] if isinstance(variants, str) else list(variants)
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ValueError(f"vcr: unknown or no variants {unknown or variants}; choose from {list(VARIANTS)}")
        self.variants = [v for v in VARIANTS if v in variants]
        self._frame = lru_cache(maxsize=FRAME_CACHE)(self._load_frame)

    def _annotation_file(self, split: str) -> Path | None:
        name = f"{SPLIT_FILES[split]}.jsonl"
        for candidate in (self.raw_root / "vcr1annots" / name, self.raw_root / name):
            if candidate.is_file():
                return candidate
        return None

    def available_splits(self) -> list[str]:
        return [split for split in SPLIT_FILES if self._annotation_file(split) is not None]

    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        path = self._annotation_file(split)
        self.report.add_input(path)
        for line, record in iter_jsonl(path):
            where = f"{path.name} line {line}"
            yield from self.attempt(split, where, self._rows, record, split, where) or []

    # ----- one record -------------------------------------------------------------------------------
    def _rows(self, record: Any, split: str, where: str) -> list[dict[str, Any]]:
        """The rows of every requested variant; a record-level problem skips the record once."""
        require_keys(record, RECORD_KEYS, "the record")
        if "answer_label" not in record or "rationale_label" not in record:
            raise SkipRecord("unlabelled_item", "no answer_label/rationale_label (VCR's test labels are hidden)")
        item = _Item(record)
        objects = self._frame(str(record["img_fn"]), str(record["metadata_fn"]), tuple(item.objects))
        metadata = objects.metadata
        rows = []
        for variant in self.variants:
            key = f"{item.annot_id}:{variant}"
            with self.skipping(split, f"{where} ({variant})"):  # a bad box only skips the variants using it
                built = self._build(variant, item, objects, row_rng(self.seed, f"{split}:{key}"))
                if built is None:
                    continue
                rows.append(self.make_row(
                    key=key, split=split, variant=variant, task=built.task, image=objects.image,
                    image_id=str(record.get("img_id", record["img_fn"])), width=metadata["width"],
                    height=metadata["height"], regions=[objects.region(i) for i in built.indices],
                    conversations=built.conversations, choices=built.choices, label=built.label,
                    meta={**item.meta(record), "object_indices": built.indices,
                          "scores": [objects.score(i) for i in built.indices], **built.meta}))
        return rows

    def _build(self, variant: str, item: _Item, objects: _Objects, rng: random.Random) -> _Built | None:
        """One variant's row content, or ``None`` when the record does not fit the variant."""
        every = list(range(len(item.objects)))
        if variant in MC_TASKS:
            return self._multiple_choice(variant, item)
        if variant == "all":
            regions = join_regions([region_token(k) for k in range(1, len(every) + 1)])
            opening = pick(rng, REGION_REASONING_PREFIX, regions=regions) + " "
            return _Built(every, self._reasoning(item, objects, every, opening, rng, with_rationale=True))
        asked = vcr_text.object_indices(item.question)
        if not asked or (variant == "single") != (len(asked) == 1):
            return None
        if not set(vcr_text.object_indices(item.answer)) <= set(asked):
            return None
        with_rationale = set(vcr_text.object_indices(item.rationale)) <= set(asked)
        conversations = self._reasoning(item, objects, asked, "", rng, with_rationale)
        return _Built(asked, conversations, meta={"with_rationale": with_rationale})

    @staticmethod
    def _reasoning(item: _Item, objects: _Objects, indices: list[int], opening: str, rng: random.Random,
                   with_rationale: bool) -> list[dict[str, str]]:
        number = {index: k for k, index in enumerate(indices, start=1)}

        def ask(ref: list[int]) -> str:
            return join_regions([region_token(number[i]) for i in ref])

        def tell(ref: list[int]) -> str:
            return join_regions([f"{objects.names[i]} at region{number[i]}" for i in ref])

        turns = [turn("human", f"{IMAGE_TOKEN}\n{opening}{vcr_text.natural_text(item.question, ask)}"),
                 turn("gpt", _sentence(vcr_text.natural_text(item.answer, tell)))]
        if with_rationale:
            turns += [turn("human", pick(rng, RATIONALE_QUESTION)),
                      turn("gpt", _sentence(vcr_text.natural_text(item.rationale, tell)))]
        return turns

    @staticmethod
    def _multiple_choice(variant: str, item: _Item) -> _Built:
        n = len(item.objects)
        question = vcr_text.protocol_text(item.question)
        if variant == "qa":
            choices = [vcr_text.protocol_text(c) for c in item.answer_choices]
            label = item.answer_label
            prompt = vcr_text.qa_prompt(question, choices, n)
        else:
            choices = [vcr_text.protocol_text(c) for c in item.rationale_choices]
            label = item.rationale_label
            prompt = vcr_text.qar_prompt(question, vcr_text.protocol_text(item.answer), choices, n)
        conversations = [turn("human", f"{IMAGE_TOKEN}\n{prompt}"), turn("gpt", vcr_text.letter(label))]
        return _Built(list(range(n)), conversations, task=MC_TASKS[variant], choices=choices, label=label)

    def _load_frame(self, img_fn: str, metadata_fn: str, names: tuple[str, ...]) -> _Objects:
        """A frame's checked metadata and image path; an unreadable file skips the records of that frame only."""
        image_dir = self.options["image_dir"]
        path = resolve_under(self.raw_root, f"{image_dir}/{metadata_fn}")
        try:
            metadata = read_json(path, expect=dict)
            require_keys(metadata, ("boxes", "width", "height"), f"metadata {path}")
        except (SourceFileError, SkipRecord) as exc:
            raise SkipRecord("vcr_metadata_unreadable", str(exc)) from exc
        if not isinstance(metadata["boxes"], list) or not all(
                isinstance(b, list) and len(b) == 5 for b in metadata["boxes"]):
            raise SkipRecord("vcr_metadata_unreadable", f"{path}: boxes must be [x1, y1, x2, y2, score] lists")
        try:
            image_side(metadata["width"], "width"), image_side(metadata["height"], "height")
        except SkipRecord as error:
            raise SkipRecord("vcr_metadata_unreadable", f"{path}: {error.detail}") from error
        if len(metadata["boxes"]) != len(names):
            raise SkipRecord("vcr_metadata_mismatch", f"{path} has {len(metadata['boxes'])} boxes for "
                                                      f"{len(names)} objects")
        image = relative_image_path(f"{image_dir}/{img_fn}")
        return _Objects(metadata, list(names), image=image, with_segmentation=bool(self.options["segmentation"]))


@dataclass
class _Built:
    """What one variant contributes to a row: its regions (object indices), turns and task fields."""

    indices: list[int]
    conversations: list[dict[str, str]]
    task: str = "region_reasoning"
    choices: list[str] = field(default_factory=list)
    label: int = -1
    meta: dict[str, Any] = field(default_factory=dict)


class _Item:
    """The fields of one labelled jsonl record, with every token list and reference checked."""

    def __init__(self, record: dict[str, Any]):
        self.annot_id = str(record["annot_id"])
        if not isinstance(record["objects"], list):
            raise SkipRecord("vcr_bad_objects", f"objects is {type(record['objects']).__name__}, expected a list")
        self.objects = [str(name) for name in record["objects"]]
        if not self.objects:  # every row kind needs at least one region (VCR frames always have people)
            raise SkipRecord("vcr_no_objects", f"annot_id {self.annot_id} has an empty objects list")
        try:
            self.question = vcr_text.check_tokens(record["question"])
            self.answer_choices = [vcr_text.check_tokens(c) for c in record["answer_choices"]]
            self.rationale_choices = [vcr_text.check_tokens(c) for c in record["rationale_choices"]]
        except (ValueError, TypeError) as exc:
            raise SkipRecord("vcr_bad_tokens", str(exc)) from exc
        if len(self.answer_choices) != 4 or len(self.rationale_choices) != 4:
            raise SkipRecord("vcr_bad_choices", f"{len(self.answer_choices)} answers, "
                                                f"{len(self.rationale_choices)} rationales (expected 4 each)")
        self.answer_label = _label(record, "answer_label")
        self.rationale_label = _label(record, "rationale_label")
        self.answer = self.answer_choices[self.answer_label]
        self.rationale = self.rationale_choices[self.rationale_label]
        texts = [self.question, *self.answer_choices, *self.rationale_choices]
        missing = sorted({i for tokens in texts for i in vcr_text.object_indices(tokens)
                          if not 0 <= i < len(self.objects)})
        if missing:
            raise SkipRecord("vcr_missing_object", f"annot_id {self.annot_id} refers to object(s) {missing} "
                                                   f"but has {len(self.objects)} objects")

    def meta(self, record: dict[str, Any]) -> dict[str, Any]:
        kept = ("annot_id", "img_id", "movie", "question_number", "match_fold", "answer_likelihood")
        return {**{k: record[k] for k in kept if k in record},
                "answer_label": self.answer_label, "rationale_label": self.rationale_label}


def _sentence(text: str) -> str:
    """Capitalise the first letter (an answer may open with a reference rendered as ``person at region1``)."""
    return text[:1].upper() + text[1:]


def _label(record: dict[str, Any], name: str) -> int:
    value = record[name]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 4:
        raise SkipRecord("vcr_bad_label", f"{name}={value!r} (expected 0-3)")
    return value


class _Objects:
    """A frame's objects as schema regions, each converted once (rows of the frame share them) and checked
    only when a row uses it."""

    def __init__(self, metadata: dict[str, Any], names: list[str], *, image: str, with_segmentation: bool):
        self.metadata = metadata
        self.names = names
        self.image = image
        self.with_segmentation = with_segmentation
        self._regions: dict[int, dict[str, Any]] = {}

    def score(self, index: int) -> float:
        return float(self.metadata["boxes"][index][4])

    def region(self, index: int) -> dict[str, Any]:
        if index not in self._regions:
            x1, y1, x2, y2, _ = self.metadata["boxes"][index]
            bbox = checked_box([x1, y1, x2, y2], self.metadata["width"], self.metadata["height"])
            polygons = _coco_polygons(self.metadata, index) if self.with_segmentation else None
            self._regions[index] = region(bbox, label=self.names[index], source_id=index, segmentation=polygons)
        return self._regions[index]


def _coco_polygons(metadata: dict[str, Any], index: int) -> list[list[float]] | None:
    """VCR's ``segms[i]`` (polygons of ``[x, y]`` points) as COCO flat polygons ``[x1, y1, x2, y2, ...]``."""
    segms = metadata.get("segms")
    if not isinstance(segms, list) or index >= len(segms) or not isinstance(segms[index], list):
        return None
    try:
        return [[float(v) for point in polygon for v in point[:2]] for polygon in segms[index]]
    except (TypeError, ValueError) as exc:
        raise SkipRecord("vcr_bad_segmentation", f"segms[{index}]: {exc}") from exc
