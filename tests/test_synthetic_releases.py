"""The synthetic world's raw releases, read back by the real builders and checked against ground truth."""

from __future__ import annotations

import colorsys
import json
import os
import pickle
from pathlib import Path

import pytest
from corpus_rows import built_rows
from PIL import Image, ImageDraw

from builders.build import build_source
from builders.schema import validate
from builders.sources import BUILDERS
from builders.synthetic import SOURCE_OPTIONS, SOURCE_RELEASE, synthesize
from builders.synthetic.vocab import COLOURS

# Rows per split and task of each source built from the tiny world at seed 0.
BUILT_ROWS = {
    "coco": {"train": {"region_category": 24}, "validation": {"region_category": 8}},
    "refcoco": {"train": {"region_caption_short": 191}, "validation": {"region_caption_short": 9},
                "testA": {"region_caption_short": 14}, "testB": {"region_caption_short": 14}},
    "refcoco+": {"train": {"region_caption_short": 175}, "validation": {"region_caption_short": 9},
                 "testA": {"region_caption_short": 14}, "testB": {"region_caption_short": 14}},
    "refcocog": {"train": {"region_caption": 211}, "validation": {"region_caption": 14},
                 "test": {"region_caption": 14}},
    "vg": {"train": {"region_caption": 24}, "test": {"region_caption": 11}},
    "flickr30k": {"train": {"multi_region_caption": 80}, "validation": {"multi_region_caption": 20},
                  "test": {"multi_region_caption": 20}},
    "vcr": {"train": {"region_reasoning": 48, "vcr_qa": 24, "vcr_qar": 24},
            "validation": {"region_reasoning": 24, "vcr_qa": 12, "vcr_qar": 12}},
    "llava": {"train": {"image_conversation": 60}},
}


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "world"
    synthesize(out, "tiny", seed=0)
    return out


@pytest.fixture(scope="session")
def truth(world) -> dict[str, dict]:
    """world.json's scenes by every file path their picture has."""
    manifest = json.loads((world / "world.json").read_text())
    return {path: scene for scene in manifest["scenes"] for path in scene["files"]}


@pytest.mark.parametrize("source", list(BUILDERS))
def test_every_source_builds_from_its_release_without_a_skip(world, tmp_path, source):
    raw_root = world / SOURCE_RELEASE[source]
    report = build_source(source, raw_root, tmp_path / source, options=SOURCE_OPTIONS.get(source), progress=False)
    assert report.skipped == {} or all(not reasons for reasons in report.skipped.values()), report.skip_examples
    rows = built_rows(tmp_path / source)
    assert report.written == BUILT_ROWS[source]
    assert len(rows) == sum(sum(tasks.values()) for tasks in report.written.values())
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        validate(row)
        path = row["image"]["path"] if isinstance(row["image"], dict) else row["image"]
        assert (raw_root / path).is_file(), f"{row['id']}: image {path} missing"
        with Image.open(raw_root / path) as image:
            assert image.size == (row["width"], row["height"])


def test_releases_have_the_splits_of_the_real_ones(world):
    splits = {}
    for name, split_by in (("refcoco", "unc"), ("refcocog", "umd"), ("refcoco+", "unc"), ("refcoco", "google")):
        with open(world / "refer" / name / f"refs({split_by}).p", "rb") as handle:
            splits[(name, split_by)] = {ref["split"] for ref in pickle.load(handle)}
    assert splits[("refcoco", "unc")] == splits[("refcoco+", "unc")] == {"train", "val", "testA", "testB"}
    assert splits[("refcocog", "umd")] == {"train", "val", "test"}
    assert splits[("refcoco", "google")] == {"train", "val"}
    for split in ("train", "val", "test"):
        assert (world / "flickr30k" / f"{split}.txt").read_text().split()
    assert {p.name for p in (world / "vcr" / "vcr1annots").iterdir()} == {"train.jsonl", "val.jsonl"}


def test_shared_pictures_are_the_same_file_in_every_release(world, truth):
    coco_train = {path for path in truth if path.startswith("coco/train2017/")}
    assert coco_train
    for path in coco_train:
        image_id = int(Path(path).stem)
        files = truth[path]["files"]
        refer = f"refer/images/mscoco/images/train2014/COCO_train2014_{image_id:012d}.jpg"
        assert refer in files and f"llava/train2017/{image_id:012d}.jpg" in files
        assert os.path.samefile(world / path, world / refer) or (world / path).read_bytes() == (world / refer).read_bytes()
    image_data = json.loads((world / "vg" / "image_data.json").read_text())
    coco_linked = [info for info in image_data if info["coco_id"]]
    flickr_linked = [info for info in image_data if info["flickr_id"]]
    assert coco_linked and flickr_linked
    for info in coco_linked:
        vg_file = world / "vg" / "/".join(info["url"].rsplit("/", 2)[-2:])
        assert vg_file.read_bytes() == (world / "coco" / "train2017" / f"{info['coco_id']:012d}.jpg").read_bytes()
    for info in flickr_linked:
        vg_file = world / "vg" / "/".join(info["url"].rsplit("/", 2)[-2:])
        assert vg_file.read_bytes() == (world / "flickr30k" / "flickr30k-images" / f"{info['flickr_id']}.jpg").read_bytes()
    llava = json.loads((world / "llava" / "conversation_58k.json").read_text())
    assert {f"coco/train2017/{record['image']}" for record in llava} == coco_train


def _hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0]


def test_object_colours_are_the_colours_drawn(world, truth):
    """The colour word of every object is the palette colour nearest in hue to the pixels inside its outline."""
    palette = {name: _hue(rgb) for name, rgb in COLOURS.items()}
    checked = 0
    for path, scene in truth.items():
        if not path.startswith("coco/"):
            continue
        image = Image.open(world / path).convert("RGB")
        for obj in scene["objects"]:
            mask = Image.new("L", image.size, 0)
            ImageDraw.Draw(mask).polygon([tuple(p) for p in obj["polygon"]], fill=255)
            pixels = [image.getpixel((x, y)) for x in range(obj["box"][0], obj["box"][2])
                      for y in range(obj["box"][1], obj["box"][3]) if mask.getpixel((x, y)) > 200]
            mean = [sum(p[i] for p in pixels) / len(pixels) for i in range(3)]
            hue = _hue(mean)
            nearest = min(palette, key=lambda name: min(abs(palette[name] - hue), 1 - abs(palette[name] - hue)))
            assert nearest == obj["colour"], (path, obj)
            checked += 1
    assert checked > 50


def test_every_scene_has_a_distractor(truth):
    """Region questions are ambiguous without the region: two objects share a shape or a colour."""
    for scene in {s["key"]: s for s in truth.values()}.values():
        objects = scene["objects"]
        assert len(objects) >= 2
        assert any(a[name] == b[name] for i, a in enumerate(objects) for b in objects[i + 1:]
                   for name in ("shape", "colour")), scene["key"]


def test_flickr_boxes_are_one_based_inclusive(world, truth):
    """XML boxes convert back to the ground truth with [xmin-1, ymin-1, xmax, ymax].

    That is the Flickr30K rule of docs/design.md#box-convention.
    """
    import xml.etree.ElementTree as ET

    for xml in sorted((world / "flickr30k" / "Annotations").glob("*.xml")):
        scene = truth[f"flickr30k/flickr30k-images/{xml.stem}.jpg"]
        boxes = sorted([int(b.find(t).text) - (1 if t in ("xmin", "ymin") else 0) for t in ("xmin", "ymin", "xmax", "ymax")]
                       for b in ET.parse(xml).getroot().iter("bndbox"))
        assert boxes == sorted(obj["box"] for obj in scene["objects"])


def test_vcr_answers_are_true_of_the_referenced_object_only(world, truth):
    """The right answer states the referenced object's colour or pattern; every wrong one contradicts it."""
    attribute_words = {word: name for name, words in (("colour", COLOURS), ("texture", ("plain", "striped",
                                                                                        "dotted", "checkered")))
                       for word in words}
    records = [json.loads(line) for split in ("train", "val")
               for line in (world / "vcr" / "vcr1annots" / f"{split}.jsonl").read_text().splitlines()]
    assert records
    ambiguous = 0
    for record in records:
        scene = truth[f"vcr/vcr1images/{record['img_fn']}"]
        (target,) = [token[0] for token in record["question"] if isinstance(token, list)]
        obj = scene["objects"][target]
        for k, choice in enumerate(record["answer_choices"]):
            assert choice[0] == [target] and choice[1] == "is"
            name = attribute_words[choice[2]]
            assert (obj[name] == choice[2]) == (k == record["answer_label"]), record["annot_id"]
        others = [o for o in scene["objects"] if o is not obj]
        right = record["answer_choices"][record["answer_label"]][2]
        name = attribute_words[right]
        ambiguous += any(o[name] != right and o["shape"] == obj["shape"] for o in others)
    assert ambiguous > len(records) // 4  # many questions need the region: a same-shape object differs


def test_vg_full_layout_at_reduced_size(tmp_path):
    """vg_full streams the six v1.2 files; entry i of every file is image i; ~50 regions per image."""
    summary = synthesize(tmp_path / "full", "vg_full", seed=0, vg_images=300)["vg"]
    root = tmp_path / "full" / "vg"
    files = {name: json.loads((root / f"{name}.json").read_text()) for name in
             ("image_data", "region_descriptions", "objects", "attributes", "relationships", "question_answers")}
    ids = [info["image_id"] for info in files["image_data"]]
    assert ids == list(range(1, 301))
    assert [r["id"] for r in files["region_descriptions"]] == ids == [r["id"] for r in files["question_answers"]]
    assert [r["image_id"] for r in files["objects"]] == ids == [r["image_id"] for r in files["relationships"]]
    regions = [region for record in files["region_descriptions"] for region in record["regions"]]
    assert len(regions) == summary["regions"] and 40 <= len(regions) / 300 <= 60
    assert set(regions[0]) == {"region_id", "width", "height", "image_id", "phrase", "y", "x"}
    assert len({r["region_id"] for r in regions}) == len(regions)
    relation = files["relationships"][0]["relationships"][0]
    assert set(relation["subject"]) == {"name", "h", "object_id", "synsets", "w", "y", "x"}
    assert not (tmp_path / "full" / "vg" / "VG_100K").exists()  # annotations only


def _content(rows: list[dict]) -> list[tuple]:
    """What a layout must agree on: image, boxes, assistant answers and references (ids and templates differ)."""
    return sorted((row["split"], row["image"]["path"], tuple(tuple(r["bbox"]) for r in row["regions"]),
                   tuple(t["value"] for t in row["conversations"] if t["from"] == "gpt"), tuple(row["references"]))
                  for row in rows)


@pytest.mark.parametrize(("source", "layout"), [("refcoco", "mdetr"), ("refcocog", "mdetr"),
                                                ("flickr30k", "mdetr"), ("vg", "grit")])
def test_preprocessed_variants_give_the_rows_of_the_originals(world, tmp_path, source, layout):
    """MDETR / GRiT files converted from the originals build into the same regions and texts."""
    raw_root = world / SOURCE_RELEASE[source]
    options = SOURCE_OPTIONS.get(source, {})
    original = build_source(source, raw_root, tmp_path / "original", options=options, progress=False)
    variant = build_source(source, raw_root, tmp_path / "variant", options={"layout": layout}, progress=False)
    assert not any(variant.skipped.values()) and not any(original.skipped.values())
    original_rows, variant_rows = built_rows(tmp_path / "original"), built_rows(tmp_path / "variant")
    assert {json.loads(row["meta"])["layout"] for row in variant_rows} == {layout}
    if source == "vg":  # GRiT files are split by test_image_ids.txt too, images are linked under images/
        assert [row["split"] for row in original_rows].count("test") == [row["split"] for row in variant_rows].count("test")
        assert sorted(r["bbox"] for row in original_rows for r in row["regions"]) == \
            sorted(r["bbox"] for row in variant_rows for r in row["regions"])
        return
    assert _content(original_rows) == _content(variant_rows)
