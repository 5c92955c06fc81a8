"""The spatial-instruction schema (DESIGN.md §3) as ``datasets.Features`` and its validator.

One row is one instruction-tuning sample: an image, the regions it talks about, and a conversation in which
human turns refer to ``regions[K-1]`` as ``<regionK>``. :func:`validate` checks every rule of the design;
builders call it on every row they write, the trainer on every row it reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import datasets
import orjson

from builders.errors import SchemaError
from builders.placeholders import IMAGE_TOKEN, region_refs

REGION_FEATURE = {
    "bbox": datasets.List(datasets.Value("float32"), length=4),
    "segmentation": datasets.Value("string"),
    "label": datasets.Value("string"),
    "source_id": datasets.Value("string"),
}

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "variant": datasets.Value("string"),
        "task": datasets.Value("string"),
        "split": datasets.Value("string"),
        "image": datasets.Image(decode=False),
        "image_id": datasets.Value("string"),
        "width": datasets.Value("int32"),
        "height": datasets.Value("int32"),
        "regions": datasets.List(REGION_FEATURE),
        "conversations": datasets.List({"from": datasets.Value("string"), "value": datasets.Value("string")}),
        "choices": datasets.List(datasets.Value("string")),
        "label": datasets.Value("int32"),
        "references": datasets.List(datasets.Value("string")),
        "meta": datasets.Value("string"),
    }
)

SPLITS = ("train", "validation", "test", "testA", "testB")
TASKS = (
    "region_category",
    "region_caption_short",
    "region_caption",
    "multi_region_caption",
    "region_reasoning",
    "vcr_qa",
    "vcr_qar",
    "region_classification",
    "image_conversation",
)
ROLES = ("human", "gpt")
_NAME = re.compile(r"^[a-z0-9_+\-]+$")


def validate(row: Mapping[str, Any]) -> None:
    """Check one row against every rule of DESIGN.md §3.

    Raises :class:`~builders.errors.SchemaError` naming the row id and the broken rule; returns ``None`` when
    the row is valid. The image may be a path string, ``{"path", "bytes"}`` or ``None`` only when the row
    carries no ``<image>`` (never produced by our builders, accepted for text-only corpora).
    """
    row_id = row.get("id", "<missing id>") if isinstance(row, Mapping) else "<not a mapping>"

    def fail(rule: str, detail: str = "") -> None:
        raise SchemaError(row_id, rule, detail)

    if not isinstance(row, Mapping):
        fail("row_is_mapping", f"got {type(row).__name__}")
    missing = [name for name in FEATURES if name not in row]
    if missing:
        fail("all_fields_present", f"missing {missing}")
    extra = [name for name in row if name not in FEATURES]
    if extra:
        fail("no_unknown_fields", f"unexpected {extra}")

    for name in ("id", "source", "variant", "task", "split", "image_id", "meta"):
        if not isinstance(row[name], str):
            fail("string_fields", f"{name} is {type(row[name]).__name__}")
    for name in ("source", "task"):
        if not _NAME.match(row[name]):
            fail("name_format", f"{name}={row[name]!r} must be lower-case letters, digits, _ + -")
    if row["split"] not in SPLITS:
        fail("known_split", f"split={row['split']!r}, expected one of {SPLITS}")
    if not row["id"].startswith(f"{row['source']}:{row['split']}:") or len(row["id"].split(":")) < 3:
        fail("id_format", f"id must be '<source>:<split>:<key>[:<k>]' with source={row['source']!r}")

    width, height = row["width"], row["height"]
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        fail("positive_image_size", f"width={width!r}, height={height!r}")
    _check_image(row["image"], fail)

    regions = row["regions"]
    if not isinstance(regions, list):
        fail("regions_list", f"regions is {type(regions).__name__}")
    for index, region in enumerate(regions):
        _check_region(region, index, width, height, fail)

    _check_conversation(row["conversations"], len(regions), fail)

    choices, label = row["choices"], row["label"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        fail("choices_strings", "choices must be a list of strings")
    if not _is_int(label):
        fail("label_int", f"label={label!r}")
    if choices and not 0 <= label < len(choices):
        fail("label_in_choices", f"label={label} with {len(choices)} choices")
    if not choices and label != -1:
        fail("label_without_choices", f"label={label} but no choices (expected -1)")

    references = row["references"]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        fail("references_strings", "references must be a list of strings")

    try:
        meta = orjson.loads(row["meta"])
    except orjson.JSONDecodeError as exc:
        fail("meta_json", f"meta is not JSON: {exc}")
    if not isinstance(meta, dict):
        fail("meta_json", "meta must encode a JSON object")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__.startswith("int")


def _check_image(image: Any, fail) -> None:
    if isinstance(image, str) and image:
        return
    if isinstance(image, Mapping) and (image.get("path") or image.get("bytes")):
        return
    fail("image_present", f"image must be a non-empty path or {{path, bytes}}, got {type(image).__name__}")


_REGION_KEYS = frozenset(REGION_FEATURE)
_TURN_KEYS = frozenset(("from", "value"))
_BOX_TOLERANCE = 1e-3  # float32 storage of a clipped coordinate


def _check_region(region: Any, index: int, width: int, height: int, fail) -> None:
    # Hot path: a full-size Visual Genome build validates millions of regions, so the checks are plain
    # comparisons (NaN fails every one of them) and the messages are only formatted on failure.
    if not isinstance(region, dict) or region.keys() != _REGION_KEYS:
        fail("region_fields", f"regions[{index}] must have exactly {sorted(REGION_FEATURE)}")
    bbox = region["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        fail("bbox_four_numbers", f"regions[{index}].bbox={bbox!r}")
    try:
        x1, y1, x2, y2 = float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])
    except (TypeError, ValueError):
        fail("bbox_four_numbers", f"regions[{index}].bbox={bbox!r}")
    if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)):
        fail("bbox_finite", f"regions[{index}].bbox={bbox!r}")
    if not (x1 < x2 and y1 < y2):
        fail("bbox_xyxy_positive_size", f"regions[{index}].bbox={bbox!r} needs x1<x2 and y1<y2")
    if x1 < -_BOX_TOLERANCE or y1 < -_BOX_TOLERANCE or x2 > width + _BOX_TOLERANCE or y2 > height + _BOX_TOLERANCE:
        fail("bbox_inside_image", f"regions[{index}].bbox={bbox!r} outside {width}x{height}")
    segmentation = region["segmentation"]
    if not (isinstance(segmentation, str) and isinstance(region["label"], str)
            and isinstance(region["source_id"], str)):
        fail("region_fields", f"regions[{index}]: segmentation, label and source_id must be strings")
    if segmentation:
        try:
            orjson.loads(segmentation)
        except orjson.JSONDecodeError:
            fail("segmentation_json", f"regions[{index}].segmentation is neither '' nor JSON")


def _check_conversation(turns: Any, n_regions: int, fail) -> None:
    if not isinstance(turns, list) or not turns:
        fail("conversation_nonempty", "conversations must be a non-empty list")
    if len(turns) % 2:
        fail("ends_with_gpt", "the conversation must end with an assistant turn")
    image_count = 0
    referenced: set[int] = set()
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.keys() != _TURN_KEYS or not isinstance(turn["value"], str):
            fail("turn_fields", f"conversations[{index}] must be {{from, value}} with a string value")
        expected = ROLES[index % 2]
        if turn["from"] != expected:
            fail("turns_alternate", f"conversations[{index}] is from {turn['from']!r}, expected {expected!r}")
        value = turn["value"]
        image_count += value.count(IMAGE_TOKEN)
        if "<region" not in value:
            continue
        refs = region_refs(value)
        if refs and expected == "gpt":
            fail("no_placeholders_in_answers", f"conversations[{index}] (gpt) contains <region{refs[0]}>")
        for k in refs:
            if not 1 <= k <= n_regions:
                fail("reference_exists", f"<region{k}> in conversations[{index}] but {n_regions} regions")
        referenced.update(refs)
    if image_count != 1 or not turns[0]["value"].startswith(IMAGE_TOKEN):
        fail("image_token_once_at_start", f"found {image_count} <image>; it must open the first human turn once")
    if len(referenced) != n_regions:
        unreferenced = sorted(set(range(1, n_regions + 1)) - referenced)
        fail("every_region_referenced", f"regions {unreferenced} are never referenced")
