"""The region renderers of the image-level baselines, pinned on one two-region row: exact text, pixels at box edges."""

from __future__ import annotations

import pytest
from PIL import Image

from baselines.renderers import RegionRenderer, renderer_from_config
from builders.schema import validate

W, H = 100, 80


def gradient() -> Image.Image:
    """Every pixel tells where it is: R = x, G = y, B = 128 (no box colour occurs in it)."""
    image = Image.new("RGB", (W, H))
    image.putdata([(x, y, 128) for y in range(H) for x in range(W)])
    return image


def two_region_row() -> dict:
    row = {
        "id": "synthetic:train:7", "source": "synthetic", "variant": "", "task": "region_reasoning", "split": "train",
        "image": "images/7.png", "image_id": "7", "width": W, "height": H,
        "regions": [
            {"bbox": [10.0, 20.0, 50.0, 60.0], "segmentation": "", "label": "circle", "source_id": "1"},
            {"bbox": [60.0, 10.0, 90.0, 40.0], "segmentation": "", "label": "square", "source_id": "2"},
        ],
        "conversations": [
            {"from": "human", "value": "<image>\nWhat is between <region1> and <region2>? Describe <region1>."},
            {"from": "gpt", "value": "region1 is a circle left of region2."},
            {"from": "human", "value": "And <region2>?"},
            {"from": "gpt", "value": "A square."},
        ],
        "choices": [], "label": -1, "references": [], "meta": "{}",
    }
    validate(row)
    return row


def texts(rendered) -> list[str]:
    return [turn["value"] for turn in rendered.row["conversations"]]


def test_image_words_names_regions_in_words_and_keeps_the_image():
    row, image = two_region_row(), gradient()
    rendered = RegionRenderer("image_words")(row, image)
    assert texts(rendered) == ["<image>\nWhat is between object 1 and object 2? Describe object 1.",
                               "object 1 is a circle left of object 2.", "And object 2?", "A square."]
    assert rendered.images == [image]
    assert row["conversations"][0]["value"].endswith("Describe <region1>.")  # the input row is untouched


def test_a_single_region_is_the_object():
    row = two_region_row()
    row["regions"] = row["regions"][:1]
    row["conversations"] = [{"from": "human", "value": "<image>\nDescribe <region1>."},
                            {"from": "gpt", "value": "region1 is round."}]
    assert texts(RegionRenderer("image_words")(row, gradient())) == ["<image>\nDescribe the object.",
                                                                     "the object is round."]


@pytest.mark.parametrize(("coords", "first", "second"), [
    ("float", "[0.100, 0.250, 0.500, 0.750]", "[0.600, 0.125, 0.900, 0.500]"),
    ("int1000", "[100, 250, 500, 750]", "[600, 125, 900, 500]"),
    ("pixels", "[10, 20, 50, 60]", "[60, 10, 90, 40]"),
])
def test_image_coords_gives_normalised_boxes_at_the_first_mention(coords, first, second):
    rendered = RegionRenderer("image_coords", coords=coords)(two_region_row(), gradient())
    assert texts(rendered) == [f"<image>\nWhat is between region1 {first} and region2 {second}? Describe region1.",
                               "region1 is a circle left of region2.", "And region2?", "A square."]
    assert len(rendered.images) == 1 and rendered.images[0].size == (W, H)


def test_int1000_stays_below_1000_at_the_image_edge():
    row = two_region_row()
    row["regions"][1]["bbox"] = [60.0, 10.0, 100.0, 80.0]
    assert "region2 [600, 125, 999, 999]" in texts(RegionRenderer("image_coords", coords="int1000")(row, gradient()))[0]


def test_image_overlay_draws_each_box_in_its_named_colour():
    rendered = RegionRenderer("image_overlay", line_width=2)(two_region_row(), gradient())
    assert texts(rendered) == [
        "<image>\nWhat is between the region in the red box and the region in the blue box? "
        "Describe the region in the red box.",
        "the region in the red box is a circle left of the region in the blue box.",
        "And the region in the blue box?", "A square."]
    (canvas,) = rendered.images
    red, blue = (255, 0, 0), (0, 64, 255)
    # box 1 covers pixel columns 10..49 and rows 20..59: its outline is the outermost 2 pixels of that block
    for xy in [(10, 20), (49, 59), (11, 21), (48, 58), (30, 20), (10, 40), (49, 40), (30, 59)]:
        assert canvas.getpixel(xy) == red, xy
    for xy in [(9, 20), (10, 19), (50, 59), (49, 60), (12, 22), (30, 40)]:
        assert canvas.getpixel(xy) == (xy[0], xy[1], 128), xy  # outside the line, or inside the box: untouched
    for xy in [(60, 10), (89, 39), (75, 10), (61, 11)]:
        assert canvas.getpixel(xy) == blue, xy
    for xy in [(59, 10), (90, 39), (62, 12)]:
        assert canvas.getpixel(xy) == (xy[0], xy[1], 128), xy


def test_overlay_line_width_scales_with_the_image_by_default():
    (canvas,) = RegionRenderer("image_overlay")(two_region_row(), gradient()).images
    assert canvas.getpixel((10, 20)) == canvas.getpixel((11, 21)) == (255, 0, 0)  # 2% of 100 px = 2 px
    assert canvas.getpixel((12, 22)) == (12, 22, 128)


def test_image_crop_cuts_the_union_of_the_regions_with_a_margin():
    renderer = RegionRenderer("image_crop", margin=0.1)
    rendered = renderer(two_region_row(), gradient())
    assert texts(rendered)[0] == "<image>\nWhat is between object 1 and object 2? Describe object 1."
    (crop,) = rendered.images
    # union [10, 10, 90, 60]; margin 10% of 80 x 50 = 8 x 5 px each side -> pixels x 2..97, y 5..64
    assert crop.size == (96, 60)
    assert crop.getpixel((0, 0)) == (2, 5, 128)
    assert crop.getpixel((95, 59)) == (97, 64, 128)


def test_a_crop_is_clipped_to_the_image_and_follows_the_mentioned_region():
    row = two_region_row()
    row["conversations"] = [{"from": "human", "value": "<image>\nDescribe <region2>."},
                            {"from": "gpt", "value": "A square."}]
    (crop,) = RegionRenderer("image_crop", margin=0.5)(row, gradient()).images
    # region 2 [60, 10, 90, 40] with 15 px each side -> x 45..99 (clipped at 100), y 0 (clipped)..54
    assert crop.size == (55, 55)
    assert crop.getpixel((0, 0)) == (45, 0, 128)
    assert crop.getpixel((54, 54)) == (99, 54, 128)


def test_image_crop_full_gives_the_crop_then_the_full_image():
    renderer = RegionRenderer("image_crop_full", margin=0.0)
    crop, full = renderer(two_region_row(), gradient()).images
    assert renderer.num_images == 2
    assert crop.size == (80, 50) and crop.getpixel((0, 0)) == (10, 10, 128) and crop.getpixel((79, 49)) == (89, 59, 128)
    assert full.size == (W, H) and full.getpixel((99, 79)) == (99, 79, 128)


def test_blind_drops_the_image_and_names_regions_in_words():
    renderer = RegionRenderer("blind")
    rendered = renderer(two_region_row(), None)
    assert texts(rendered)[:2] == ["What is between object 1 and object 2? Describe object 1.",
                                   "object 1 is a circle left of object 2."]
    assert rendered.images == [] and renderer.num_images == 0


def test_renderers_scale_boxes_to_the_image_they_are_given():
    """A row's boxes are in its original pixels; a resized image gets boxes scaled to it."""
    half = gradient().resize((W // 2, H // 2), Image.Resampling.NEAREST)
    (crop,) = RegionRenderer("image_crop", margin=0.0)(two_region_row(), half).images
    assert crop.size == (40, 25)


def test_bad_configs_and_rows_are_clear_errors():
    with pytest.raises(ValueError, match="unknown renderer 'image_mask'"):
        RegionRenderer("image_mask")
    with pytest.raises(ValueError, match="coords='percent'"):
        renderer_from_config({"name": "image_coords", "coords": "percent"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        renderer_from_config({"name": "image_overlay", "colour": "red"})
    with pytest.raises(ValueError, match="needs the row's image"):
        RegionRenderer("image_overlay")(two_region_row(), None)
    row = two_region_row()
    row["conversations"][2]["value"] = "And <region3>?"
    with pytest.raises(ValueError, match=r"synthetic:train:7.*<region3>.*2 regions"):
        RegionRenderer("image_words")(row, gradient())
    assert renderer_from_config("image_crop") == RegionRenderer("image_crop")
