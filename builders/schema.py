"""The spatial-instruction schema (docs/design.md#schema) as ``datasets.Features`` and its validator.

One row is one instruction-tuning sample: an image, the regions it talks about, and a conversation in which
human turns refer to ``regions[K-1]`` as ``<regionK>``. :func:`validate` checks every rule of the design;
builders call it on every row they write, the trainer on every row it reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from itertools import repeat
from operator import eq
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
    if _plainly_valid(row):
        return
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


# ----- the fast path -------------------------------------------------------------------------------------------
_FIELD_KEYS = frozenset(FEATURES)
_FLOAT_EXACT = 2 ** 53  # every integer below is a float exactly


def _plainly_valid(row: Any) -> bool:
    """``True`` only for a row that certainly keeps every rule: the common shape of a builder's row, checked in
    one pass with exact types (``str``, ``int``, ``float``, ``list``, ``dict``) and the rules folded together.

    ``False`` says nothing: :func:`validate` then runs the rule checks one by one, which find and name the
    broken rule. A full-size Visual Genome build validates 400 k rows with 5.4 M regions, where running each
    rule as its own call over the row costs about twice this. tests/test_schema_fast_path.py checks that this
    accepts no row that a rule refuses.
    """
    if type(row) is not dict or row.keys() != _FIELD_KEYS:
        return False
    source, split, task, width, height, image = (row["source"], row["split"], row["task"], row["width"],
                                                 row["height"], row["image"])
    if not (type(source) is str and type(split) is str and type(task) is str and type(row["id"]) is str
            and type(row["variant"]) is str and type(row["image_id"]) is str and type(row["meta"]) is str
            and split in SPLITS and _NAME.match(source) and _NAME.match(task)
            # source and split hold no ':', so this prefix alone gives the id its three parts
            and row["id"].startswith(f"{source}:{split}:")
            # a side beyond float precision leaves the fast path: its box bounds would be computed differently
            and type(width) is int and type(height) is int and 0 < width < _FLOAT_EXACT and 0 < height < _FLOAT_EXACT
            and type(image) is str and image):
        return False
    return (_plain_regions(row["regions"], width, height) and _plain_conversation(row["conversations"],
                                                                                  len(row["regions"]))
            and _plain_choices(row["choices"], row["label"], row["references"]) and _plain_meta(row["meta"]))


def _plain_regions(regions: Any, width: int, height: int) -> bool:
    if type(regions) is not list:
        return False
    high_x, high_y = width + _BOX_TOLERANCE, height + _BOX_TOLERANCE
    for region in regions:
        if type(region) is not dict or region.keys() != _REGION_KEYS:
            return False
        bbox, segmentation = region["bbox"], region["segmentation"]
        if type(bbox) is not list or len(bbox) != 4:
            return False
        x1, y1, x2, y2 = bbox
        # exact floats: the chained comparisons then also refuse NaN and infinities
        if not (type(x1) is float and type(y1) is float and type(x2) is float and type(y2) is float
                and -_BOX_TOLERANCE <= x1 < x2 <= high_x and -_BOX_TOLERANCE <= y1 < y2 <= high_y
                and type(segmentation) is str and type(region["label"]) is str
                and type(region["source_id"]) is str):
            return False
        if segmentation and not _is_json(segmentation):
            return False
    return True


def _plain_conversation(turns: Any, n_regions: int) -> bool:
    """The conversation rules over whole columns: roles, values, and the placeholders of all turns at once."""
    if (type(turns) is not list or not turns or len(turns) % 2 or not _all_of(dict, turns)
            or not all(map(eq, map(dict.keys, turns), repeat(_TURN_KEYS)))):
        return False
    values = [turn["value"] for turn in turns]
    if [turn["from"] for turn in turns] != list(ROLES) * (len(turns) // 2) or not _all_of(str, values):
        return False
    # "\0" joins: no placeholder holds it, so none is found across two turns
    questions, answers = "\0".join(values[0::2]), "\0".join(values[1::2])
    if "<region" in answers or IMAGE_TOKEN in answers or questions.count(IMAGE_TOKEN) != 1:
        return False
    if not values[0].startswith(IMAGE_TOKEN):
        return False
    try:
        referenced = set(region_refs(questions))
    except ValueError:  # a number of over 4,300 digits, which int() refuses: the rule checks meet it in order
        return False
    return len(referenced) == n_regions and all(1 <= k <= n_regions for k in referenced)


def _plain_choices(choices: Any, label: Any, references: Any) -> bool:
    if not (type(choices) is list and type(references) is list and type(label) is int):
        return False
    if not (0 <= label < len(choices) if choices else label == -1):
        return False
    return all(type(choice) is str for choice in choices) and all(type(text) is str for text in references)


def _plain_meta(meta: str) -> bool:
    try:
        return type(orjson.loads(meta)) is dict
    except orjson.JSONDecodeError:
        return False


def _all_of(kind: type, values: list[Any]) -> bool:
    """Every value is exactly a ``kind`` (no subclass: a ``str`` subclass may compare as it likes)."""
    return {*map(type, values)} <= {kind}


def _is_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
