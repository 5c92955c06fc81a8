"""LLaVA-Instruct-150K conversations -> ``image_conversation`` rows, optionally with detected regions.

The release files (docs/formats.md#llava-release-files) are JSON arrays of ``{id, image, conversations}``;
turns alternate ``human`` / ``gpt`` and the first human turn carries ``<image>`` before *or after* the
question. Rows put it in front (:func:`builders.placeholders.with_image_prefix`), as the schema requires.
The files are streamed (``llava_instruct_150k.json`` is 229 MB). ``files: auto`` reads
``llava_instruct_150k.json`` when present and otherwise whichever of its three parts exist
(``conversation_58k``, ``detail_23k``, ``complex_reasoning_77k``); ``llava_instruct_80k`` (a subset of
the 150k file) only when named.

With a detection pickle (GPT4RoI's ``llava_150k_bbox_pred_results.pkl``: a list of ``{filename,
pred_bboxes [N, 5] normalised xyxy + score, labels [N]}``), the detections of the row's image that pass
GPT4RoI's filter (score > 0.3, normalised width and height > 0.02) become regions, listed in the first human
turn, and two yes/no presence questions are appended — one about a class that was detected, one about a
class with no detection at any score — *in the row itself* (GPT4RoI's ``DetLLava`` appended them to the
stored record instead of the copy it returned). Unlike GPT4RoI, an image whose detections all fail the
filter gets no regions and no presence questions, rather than its ten first unfiltered boxes. The pickle is
read with the restricted unpickler (numpy arrays allowed, nothing that could run code).

Pickle labels are class indices; ``class_names`` maps them: ``coco`` (COCO's 80 names in category-id order,
the default for other detection files), ``lvis`` (the official LVIS v1 names, shipped as
``builders/sources/lvis_v1_names.txt``, docs/formats.md#lvis-v1-names), a file with one name per line, or a
list. GPT4RoI's own pickle was made with an LVIS detector (EVA-02; its ``det_llava.py`` names labels from an
LVIS tuple that fuses ``'shaver_(electric)' 'shaving_cream'``, shifting every later index by one), so that file
without ``class_names`` is refused with a message naming ``class_names=lvis``, and any detection file whose
labels exceed the class list is refused (a wrong list would silently misname every region).

The images are needed: the records give no image size, and the size turns normalised boxes into pixels.
Skips (counted): a record without ``<image>`` in its first turn, turns that do not alternate or do not start
with ``human``, a missing key, a missing, unreadable or oversized image (a decompression bomb is refused
from its header); a detection with a bad box is skipped on its own. A file that is not a JSON array, is truncated or is not UTF-8 stops the build with an
error naming it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from builders.boxes import checked_box, normalized_to_xyxy
from builders.errors import SkipRecord, SourceFileError
from builders.placeholders import IMAGE_TOKEN, region_refs, region_token, strip_image_token, with_image_prefix
from builders.readers.image_size import image_size
from builders.readers.jsonio import iter_json_array, read_text, require_keys
from builders.readers.paths import relative_image_path
from builders.readers.safe_pickle import safe_load_pickle
from builders.seeding import row_rng
from builders.sources.base import RegionBuilder, region, turn
from builders.sources.templates import DETECTION_PREAMBLE, PRESENCE_QUESTION, join_regions, pick

FULL_FILE = "llava_instruct_150k"
PART_FILES = ("conversation_58k", "detail_23k", "complex_reasoning_77k")
KNOWN_FILES = (FULL_FILE, "llava_instruct_80k", *PART_FILES)
DETECTION_FILE = "llava_150k_bbox_pred_results.pkl"

# COCO 2017 category names in category-id order (the contiguous 0..79 labels of mmdetection-style detectors).
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)

CLASS_LISTS = {"coco": "COCO's 80 names", "lvis": "LVIS v1's 1,203 names"}
LVIS_NAMES_FILE = Path(__file__).with_name("lvis_v1_names.txt")

PRESENCE_YES = [
    "Yes, there is a {label} in the image.",
    "Yes, a {label} can be seen in the picture.",
    "Yes. The picture shows a {label}.",
    "Yes, I can see a {label}.",
    "Yes, the image contains a {label}.",
]
PRESENCE_NO = [
    "No, there is no {label} in the image.",
    "No, I cannot see a {label} in the picture.",
    "No. The picture shows no {label}.",
    "No, the image does not contain a {label}.",
    "No, there is no sign of a {label} here.",
]


class LlavaBuilder(RegionBuilder):
    SOURCE = "llava"
    DESCRIPTION = "LLaVA-Instruct-150K image conversations, optionally grounded with detected regions."
    LICENSE = "CC BY-NC 4.0 (annotations; use must also follow OpenAI's terms); images under COCO terms"
    CITATION = "Liu et al., Visual Instruction Tuning, NeurIPS 2023."
    DEFAULT_OPTIONS = {
        "files": "auto",
        "image_dir": "train2017",
        "detections": "auto",
        "score_threshold": 0.3,
        "min_box_size": 0.02,
        "max_detections": 100,
        "class_names": None,
        "presence_questions": True,
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._detections: dict[str, Any] | None = None
        self._class_names: list[str] | None = None
        self._sizes: dict[str, tuple[int, int]] = {}

    # ----- inputs ------------------------------------------------------------------------------------
    def _files(self) -> list[Path]:
        wanted = self.options["files"]
        if wanted == "auto":
            full = self.raw_root / f"{FULL_FILE}.json"
            return [full] if full.is_file() else [p for n in PART_FILES if (p := self.raw_root / f"{n}.json").is_file()]
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        unknown = [n for n in names if n not in KNOWN_FILES]
        if unknown:
            raise ValueError(f"llava: unknown files {unknown}; known: {list(KNOWN_FILES)} or 'auto'")
        return [p for n in names if (p := self.raw_root / f"{n}.json").is_file()]

    def available_splits(self) -> list[str]:
        return ["train"] if self._files() else []

    def _detection_path(self) -> Path | None:
        value = self.options["detections"]
        if value in (None, False, "", "none", "null"):
            return None
        if value == "auto":
            path = self.raw_root / DETECTION_FILE
            return path if path.is_file() else None
        path = Path(value)
        return path if path.is_absolute() else self.raw_root / path

    def _load_detections(self) -> dict[str, Any]:
        """``image file name -> pickle entry``; loaded once, with the restricted unpickler."""
        if self._detections is None:
            path = self._detection_path()
            self._detections = {}
            if path is not None:
                entries = safe_load_pickle(path, allow_numpy=True)
                self.report.add_input(path)
                if not isinstance(entries, list):
                    raise SourceFileError(path, f"the top level is a {type(entries).__name__}",
                                          expected="a list of {filename, pred_bboxes, labels}")
                for number, entry in enumerate(entries):
                    if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
                        raise SourceFileError(path, "an entry without a string 'filename'", position=f"entry {number}",
                                              expected="{filename, pred_bboxes, labels}")
                    self._detections.setdefault(Path(entry["filename"]).name, entry)
                self._check_labels(path, entries)
        return self._detections

    def _check_labels(self, path: Path, entries: list[dict[str, Any]]) -> None:
        """Refuse a detection file whose labels do not fit the class list: every name would be wrong."""
        names = self._names()
        highest = max((_highest_label(entry) for entry in entries), default=-1)
        if highest >= len(names):
            raise SourceFileError(path, f"labels go up to {highest} but class_names has {len(names)} names",
                                  expected="source.options.class_names=lvis for an LVIS v1 detector (1,203 classes), "
                                           "=coco for a COCO one (80), or a file with one name per line")

    def _names(self) -> list[str]:
        if self._class_names is None:
            value = self.options["class_names"]
            detection_path = self._detection_path()
            if value is None and detection_path is not None and detection_path.name == DETECTION_FILE:
                raise SourceFileError(detection_path, "GPT4RoI's detection pickle names LVIS v1 classes (1,203), "
                                      "not COCO's 80", expected="source.options.class_names=lvis (the official LVIS "
                                      "v1 names shipped with the suite) or a file with one name per line")
            if value is None or value == "coco":
                names = list(COCO_CLASSES)
            elif value == "lvis":
                names = read_text(LVIS_NAMES_FILE).splitlines()
            elif isinstance(value, str):
                path = Path(value) if Path(value).is_absolute() else self.raw_root / value
                names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
                self.report.add_input(path)
            else:
                names = [str(name) for name in value]
            if not names:
                raise ValueError("llava: class_names is empty")
            self._class_names = names
        return self._class_names

    # ----- rows --------------------------------------------------------------------------------------
    def iter_rows(self, split: str) -> Iterator[dict[str, Any]]:
        detections = self._load_detections()
        for path in self._files():
            self.report.add_input(path)
            seen: Counter[str] = Counter()
            for index, record in enumerate(iter_json_array(path)):
                row = self.attempt(split, f"{path.name} record {index}", self._record_row, record, index,
                                   path.stem, split, detections, seen)
                if row is not None:
                    yield row

    def _record_row(self, record: Any, index: int, stem: str, split: str, detections: dict[str, Any],
                    seen: Counter[str]) -> dict[str, Any]:
        """The row of one record, keyed ``<file stem>:<record id>``; a repeated id gets ``:1``, ``:2``, ..."""
        require_keys(record, ("id", "image", "conversations"), "the record")
        record_id = str(record["id"])
        key = f"{stem}:{record_id}" + (f":{seen[record_id]}" if seen[record_id] else "")
        seen[record_id] += 1
        return self._row(record, key, index, stem, split, detections)

    def _row(self, record: dict[str, Any], key: str, index: int, stem: str, split: str,
             detections: dict[str, Any]) -> dict[str, Any]:
        conversations = _checked_conversation(record["conversations"])
        name = str(record["image"])
        relative = f"{self.options['image_dir']}/{name}" if self.options["image_dir"] else name
        image = relative_image_path(relative)
        if image not in self._sizes:
            self._sizes[image] = image_size(self.raw_root / image)
        width, height = self._sizes[image]
        meta: dict[str, Any] = {"file": stem, "record_id": str(record["id"]), "record_index": index}

        entry = detections.get(Path(name).name)
        regions: list[dict[str, Any]] = []
        if entry is not None:
            rng = row_rng(self.seed, f"{split}:{key}")
            regions, scores, detected = self._detected_regions(entry, width, height, split, f"{stem} record {index}")
            if regions:
                preamble = pick(rng, DETECTION_PREAMBLE, regions=join_regions(
                    [f"{region_token(k)} ({_display(r['label'])})" for k, r in enumerate(regions, start=1)]))
                first = strip_image_token(conversations[0]["value"])
                conversations[0] = turn("human", f"{IMAGE_TOKEN}\n{preamble}\n{first}")
                meta["scores"] = scores
                if self.options["presence_questions"]:
                    presence = self._presence(regions, detected, rng)
                    for label, present in presence:
                        conversations += [
                            turn("human", PRESENCE_QUESTION.format(label=_display(label))),
                            turn("gpt", pick(rng, PRESENCE_YES if present else PRESENCE_NO, label=_display(label)))]
                    meta["presence"] = [{"label": label, "present": present} for label, present in presence]
        meta["detections"] = "joined" if regions else ("none_kept" if entry is not None else "absent")
        return self.make_row(key=key, split=split, task="image_conversation", variant="det" if regions else "",
                             image=image, image_id=str(record["id"]), width=width, height=height, regions=regions,
                             conversations=conversations, meta=meta)

    def _detected_regions(self, entry: dict[str, Any], width: int, height: int, split: str, where: str):
        """Kept regions (best score first), their scores, and every class index detected at any score."""
        try:
            boxes = np.asarray(entry.get("pred_bboxes"), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise SkipRecord("bad_detection_entry", f"{entry.get('filename')}: {exc}") from exc
        labels = _labels(entry)
        if labels is None:
            raise SkipRecord("bad_detection_entry", f"{entry.get('filename')}: labels {entry.get('labels')!r:.80} "
                                                    "are not integers")
        if boxes.ndim != 2 or boxes.shape[1] != 5 or labels.shape != (len(boxes),):
            raise SkipRecord("bad_detection_entry", f"{entry.get('filename')}: pred_bboxes {boxes.shape}, "
                                                    f"labels {labels.shape} (expected [N, 5] and [N])")
        names = self._names()
        threshold, min_size = float(self.options["score_threshold"]), float(self.options["min_box_size"])
        regions, scores = [], []
        for j in sorted(range(len(boxes)), key=lambda j: -boxes[j, 4]):
            x1, y1, x2, y2, score = boxes[j]
            if not (score > threshold and x2 - x1 > min_size and y2 - y1 > min_size):
                continue  # GPT4RoI's filter: low confidence or tiny (normalised) boxes are not regions
            with self.skipping(split, f"{where} detection {j}"):
                label = int(labels[j])
                if label < 0:
                    raise SkipRecord("detection_unknown_label", f"label {label} is negative")
                bbox = checked_box(normalized_to_xyxy([x1, y1, x2, y2], width, height), width, height)
                regions.append(region(bbox, label=names[label], source_id=f"det{j}"))
                scores.append(float(score))
            if len(regions) == int(self.options["max_detections"]):
                break
        return regions, scores, {int(label) for label in labels}

    def _presence(self, regions: list[dict[str, Any]], detected: set[int],
                  rng: random.Random) -> list[tuple[str, bool]]:
        """``(class, present)``: one detected class and one class never detected at any score, shuffled."""
        present = sorted({r["label"] for r in regions})
        absent = [name for i, name in enumerate(self._names()) if i not in detected and name not in present]
        pairs = [(rng.choice(present), True)] + ([(rng.choice(absent), False)] if absent else [])
        rng.shuffle(pairs)
        return pairs


def _labels(entry: dict[str, Any]) -> np.ndarray | None:
    """An entry's labels as int64, or ``None`` unless they are integers (``3.7``, ``NaN``, ``"3"`` are not)."""
    try:
        labels = np.asarray(entry.get("labels"))
    except (TypeError, ValueError):
        return None
    if not labels.size:
        return labels.astype(np.int64)  # no detections (an empty list is float64 to numpy)
    if labels.dtype.kind not in "iu" or (labels.dtype.kind == "u" and labels.max() > 2 ** 62):
        return None
    return labels.astype(np.int64)


def _highest_label(entry: dict[str, Any]) -> int:
    """The largest label of a pickle entry (-1 for none or malformed labels, which skip their record later)."""
    labels = _labels(entry)
    return int(labels.max()) if labels is not None and labels.ndim == 1 and labels.size else -1


def _display(name: str) -> str:
    """A class name as text (LVIS names use underscores: ``baseball_cap``)."""
    return name.replace("_", " ")


def _checked_conversation(turns: Any) -> list[dict[str, str]]:
    """The record's turns with ``<image>`` moved to the front, or a :class:`SkipRecord` naming the problem."""
    if not isinstance(turns, list) or not turns:
        raise SkipRecord("conversation_malformed", "conversations must be a non-empty list")
    for number, item in enumerate(turns):
        if not isinstance(item, dict) or not isinstance(item.get("from"), str) or not isinstance(item.get("value"), str):
            raise SkipRecord("conversation_malformed", f"turn {number} is not {{from: str, value: str}}")
    if turns[0]["from"] != "human":
        raise SkipRecord("conversation_not_starting_with_human", f"turn 0 is from {turns[0]['from']!r}")
    for number, item in enumerate(turns):
        expected = ("human", "gpt")[number % 2]
        if item["from"] != expected:
            raise SkipRecord("conversation_not_alternating", f"turn {number} is from {item['from']!r}, "
                                                             f"expected {expected!r}")
    if len(turns) % 2:
        raise SkipRecord("conversation_not_alternating", "the last turn is a question without an answer")
    counts = [item["value"].count(IMAGE_TOKEN) for item in turns]
    if sum(counts) == 0:
        raise SkipRecord("conversation_without_image", "no <image> in the conversation")
    if counts[0] != 1 or sum(counts) != 1:
        raise SkipRecord("conversation_image_misplaced", f"<image> counts per turn {counts}; expected one, in turn 0")
    if any(region_refs(item["value"]) for item in turns):
        raise SkipRecord("conversation_has_region_placeholder", "the text already contains <regionK>")
    return [turn(item["from"], with_image_prefix(item["value"]) if number == 0 else item["value"])
            for number, item in enumerate(turns)]
