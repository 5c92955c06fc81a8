"""The spatial-instruction schema (docs/design.md#schema) as ``datasets.Features`` and its validator.

One row is one instruction-tuning sample: an image, the regions it talks about, and a conversation in which
human turns refer to ``regions[K-1]`` as ``<regionK>``. :func:`validate` checks every rule of the design;
builders call it on every row they write, the trainer on every row it reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
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


class _RuleBroken(Exception):
    """A rule check's verdict; :func:`validate` turns it into a :class:`SchemaError` naming the row.

    The checks raise this rather than :class:`SchemaError` so that they need not know the row id (which may
    itself be what is missing), and so that the id is only looked up when a row fails.
    """

    def __init__(self, rule: str, detail: str = ""):
        super().__init__(rule, detail)
        self.rule = rule
        self.detail = detail


def validate(row: Mapping[str, Any]) -> None:
    """Check one row against every rule of docs/design.md#row-rules.

    Raises :class:`~builders.errors.SchemaError` naming the row id and the broken rule; returns ``None`` when
    the row is valid. The image may be a path string, ``{"path", "bytes"}`` or ``None`` only when the row
    carries no ``<image>`` (never produced by our builders, accepted for text-only corpora).
    """
    try:
        for check in _ROW_CHECKS:
            check(row)
    except _RuleBroken as broken:
        row_id = row.get("id", "<missing id>") if isinstance(row, Mapping) else "<not a mapping>"
        raise SchemaError(row_id, broken.rule, broken.detail) from broken.__cause__


def _check_mapping(row: Any) -> None:
    if not isinstance(row, Mapping):
        raise _RuleBroken("row_is_mapping", f"got {type(row).__name__}")


def _check_fields(row: Mapping[str, Any]) -> None:
    missing = [name for name in FEATURES if name not in row]
    if missing:
        raise _RuleBroken("all_fields_present", f"missing {missing}")
    extra = [name for name in row if name not in FEATURES]
    if extra:
        raise _RuleBroken("no_unknown_fields", f"unexpected {extra}")


_STRING_FIELDS = ("id", "source", "variant", "task", "split", "image_id", "meta")


def _check_strings(row: Mapping[str, Any]) -> None:
    for name in _STRING_FIELDS:
        if not isinstance(row[name], str):
            raise _RuleBroken("string_fields", f"{name} is {type(row[name]).__name__}")


def _check_names(row: Mapping[str, Any]) -> None:
    for name in ("source", "task"):
        if not _NAME.match(row[name]):
            raise _RuleBroken("name_format", f"{name}={row[name]!r} must be lower-case letters, digits, _ + -")


def _check_split(row: Mapping[str, Any]) -> None:
    if row["split"] not in SPLITS:
        raise _RuleBroken("known_split", f"split={row['split']!r}, expected one of {SPLITS}")


def _check_id(row: Mapping[str, Any]) -> None:
    if not row["id"].startswith(f"{row['source']}:{row['split']}:") or len(row["id"].split(":")) < 3:
        raise _RuleBroken("id_format", f"id must be '<source>:<split>:<key>[:<k>]' with source={row['source']!r}")


def _check_image_size(row: Mapping[str, Any]) -> None:
    width, height = row["width"], row["height"]
    if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
        raise _RuleBroken("positive_image_size", f"width={width!r}, height={height!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) or type(value).__name__.startswith("int")


def _check_image(row: Mapping[str, Any]) -> None:
    image = row["image"]
    if isinstance(image, str) and image:
        return
    if isinstance(image, Mapping) and (image.get("path") or image.get("bytes")):
        return
    raise _RuleBroken("image_present",
                      f"image must be a non-empty path or {{path, bytes}}, got {type(image).__name__}")


_REGION_KEYS = frozenset(REGION_FEATURE)
_TURN_KEYS = frozenset(("from", "value"))
_BOX_TOLERANCE = 1e-3  # float32 storage of a clipped coordinate


def _check_regions(row: Mapping[str, Any]) -> None:
    regions = row["regions"]
    if not isinstance(regions, list):
        raise _RuleBroken("regions_list", f"regions is {type(regions).__name__}")
    width, height = row["width"], row["height"]
    for index, region in enumerate(regions):
        _check_region(region, index, width, height)


def _check_region(region: Any, index: int, width: int, height: int) -> None:
    # Hot path: a full-size Visual Genome build validates millions of regions, so the checks are plain
    # comparisons (NaN fails every one of them) and the messages are only formatted on failure.
    if not isinstance(region, dict) or region.keys() != _REGION_KEYS:
        raise _RuleBroken("region_fields", f"regions[{index}] must have exactly {sorted(REGION_FEATURE)}")
    bbox = region["bbox"]
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise _RuleBroken("bbox_four_numbers", f"regions[{index}].bbox={bbox!r}")
    try:
        x1, y1, x2, y2 = float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])
    except (TypeError, ValueError) as exc:
        raise _RuleBroken("bbox_four_numbers", f"regions[{index}].bbox={bbox!r}") from exc
    if not (math.isfinite(x1) and math.isfinite(y1) and math.isfinite(x2) and math.isfinite(y2)):
        raise _RuleBroken("bbox_finite", f"regions[{index}].bbox={bbox!r}")
    if not (x1 < x2 and y1 < y2):
        raise _RuleBroken("bbox_xyxy_positive_size", f"regions[{index}].bbox={bbox!r} needs x1<x2 and y1<y2")
    if x1 < -_BOX_TOLERANCE or y1 < -_BOX_TOLERANCE or x2 > width + _BOX_TOLERANCE or y2 > height + _BOX_TOLERANCE:
        raise _RuleBroken("bbox_inside_image", f"regions[{index}].bbox={bbox!r} outside {width}x{height}")
    segmentation = region["segmentation"]
    if not (isinstance(segmentation, str) and isinstance(region["label"], str)
            and isinstance(region["source_id"], str)):
        raise _RuleBroken("region_fields", f"regions[{index}]: segmentation, label and source_id must be strings")
    if segmentation:
        try:
            orjson.loads(segmentation)
        except orjson.JSONDecodeError as exc:
            raise _RuleBroken("segmentation_json", f"regions[{index}].segmentation is neither '' nor JSON") from exc


def _check_conversation(row: Mapping[str, Any]) -> None:
    """The conversation's rules, checked in one pass over the turns (the other hot loop of a build)."""
    turns, n_regions = row["conversations"], len(row["regions"])
    if not isinstance(turns, list) or not turns:
        raise _RuleBroken("conversation_nonempty", "conversations must be a non-empty list")
    if len(turns) % 2:
        raise _RuleBroken("ends_with_gpt", "the conversation must end with an assistant turn")
    image_count = 0
    referenced: set[int] = set()
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.keys() != _TURN_KEYS or not isinstance(turn["value"], str):
            raise _RuleBroken("turn_fields", f"conversations[{index}] must be {{from, value}} with a string value")
        expected = ROLES[index % 2]
        if turn["from"] != expected:
            raise _RuleBroken("turns_alternate",
                              f"conversations[{index}] is from {turn['from']!r}, expected {expected!r}")
        value = turn["value"]
        image_count += value.count(IMAGE_TOKEN)
        if "<region" not in value:
            continue
        refs = region_refs(value)
        if refs and expected == "gpt":
            raise _RuleBroken("no_placeholders_in_answers", f"conversations[{index}] (gpt) contains <region{refs[0]}>")
        for k in refs:
            if not 1 <= k <= n_regions:
                raise _RuleBroken("reference_exists", f"<region{k}> in conversations[{index}] but {n_regions} regions")
        referenced.update(refs)
    if image_count != 1 or not turns[0]["value"].startswith(IMAGE_TOKEN):
        raise _RuleBroken("image_token_once_at_start",
                          f"found {image_count} <image>; it must open the first human turn once")
    if len(referenced) != n_regions:
        unreferenced = sorted(set(range(1, n_regions + 1)) - referenced)
        raise _RuleBroken("every_region_referenced", f"regions {unreferenced} are never referenced")


def _check_choices(row: Mapping[str, Any]) -> None:
    choices, label = row["choices"], row["label"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise _RuleBroken("choices_strings", "choices must be a list of strings")
    if not _is_int(label):
        raise _RuleBroken("label_int", f"label={label!r}")
    if choices and not 0 <= label < len(choices):
        raise _RuleBroken("label_in_choices", f"label={label} with {len(choices)} choices")
    if not choices and label != -1:
        raise _RuleBroken("label_without_choices", f"label={label} but no choices (expected -1)")


def _check_references(row: Mapping[str, Any]) -> None:
    references = row["references"]
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise _RuleBroken("references_strings", "references must be a list of strings")


def _check_meta(row: Mapping[str, Any]) -> None:
    try:
        meta = orjson.loads(row["meta"])
    except orjson.JSONDecodeError as exc:
        raise _RuleBroken("meta_json", f"meta is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise _RuleBroken("meta_json", "meta must encode a JSON object")


# The rules in the order they are checked: each check may rely on the ones before it (fields present, the
# right types), and the first broken rule is the one reported.
_ROW_CHECKS: tuple[Callable[[Mapping[str, Any]], None], ...] = (
    _check_mapping, _check_fields, _check_strings, _check_names, _check_split, _check_id, _check_image_size,
    _check_image, _check_regions, _check_conversation, _check_choices, _check_references, _check_meta,
)
