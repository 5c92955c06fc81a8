"""The schema validator enforces every rule of docs/design.md#row-rules, naming the row and the rule."""

from __future__ import annotations

import pytest
from conftest import make_schema_row

from builders.errors import SchemaError
from builders.schema import FEATURES, validate


def test_good_row_passes_and_encodes(schema_row):
    row = schema_row
    validate(row)
    encoded = FEATURES.encode_example(row)
    assert encoded["image"] == {"path": row["image"], "bytes": None}


def broken(mutate) -> dict:
    row = make_schema_row()
    mutate(row)
    return row


CASES = {
    "all_fields_present": lambda r: r.pop("meta"),
    "no_unknown_fields": lambda r: r.update(extra=1),
    "known_split": lambda r: r.update(split="dev", id="coco:dev:42"),
    "id_format": lambda r: r.update(id="vg:train:42"),
    "positive_image_size": lambda r: r.update(width=0),
    "image_present": lambda r: r.update(image=""),
    "bbox_four_numbers": lambda r: r["regions"][0].update(bbox=[1, 2, 3]),
    "bbox_finite": lambda r: r["regions"][0].update(bbox=[0, 0, float("nan"), 4]),
    "bbox_xyxy_positive_size": lambda r: r["regions"][0].update(bbox=[5, 5, 5, 9]),
    "bbox_inside_image": lambda r: r["regions"][1].update(bbox=[100, 50, 641, 480]),
    "segmentation_json": lambda r: r["regions"][0].update(segmentation="not json"),
    "turns_alternate": lambda r: r["conversations"][1].update({"from": "human"}),
    "ends_with_gpt": lambda r: r["conversations"].pop(),
    "image_token_once_at_start": lambda r: r["conversations"][0].update(value="What is <region1>? <image>"),
    "no_placeholders_in_answers": lambda r: r["conversations"][1].update(value="<region1> is a cat"),
    "reference_exists": lambda r: r["conversations"][2].update(value="And <region3>, <region2>?"),
    "every_region_referenced": lambda r: r["conversations"][2].update(value="And the other one?"),
    "label_in_choices": lambda r: r.update(choices=["a", "b"], label=2),
    "label_without_choices": lambda r: r.update(label=0),
    "meta_json": lambda r: r.update(meta="[1, 2]"),
}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_is_named(rule):
    with pytest.raises(SchemaError) as info:
        validate(broken(CASES[rule]))
    assert info.value.rule == rule
    assert info.value.row_id in str(info.value)


def test_second_image_token_is_refused():
    row = broken(lambda r: r["conversations"][2].update(value="<image> <region2>"))
    with pytest.raises(SchemaError, match="image_token_once_at_start"):
        validate(row)


def test_a_region_number_too_long_for_int_is_an_unknown_reference():
    """``int()`` refuses numbers of over 4,300 digits; such a placeholder names no region and is refused as one."""
    row = broken(lambda r: r["conversations"][2].update(value="And <region2> <region" + "9" * 5000 + ">?"))
    with pytest.raises(SchemaError) as info:
        validate(row)
    assert info.value.rule == "reference_exists"
