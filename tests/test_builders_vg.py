"""The Visual Genome builder on the real v1.2 sample (3 images, 773 regions), GRiT's layout, and bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from corpus_rows import no_output_left

from builders.build import build_source
from builders.errors import SourceFileError
from builders.placeholders import region_refs
from builders.schema import validate

pytestmark = pytest.mark.usefixtures("records_only_builds")

REGIONS_PER_IMAGE = {1: 262, 2: 256, 3: 255}  # docs/formats.md#real-samples: 773 regions on images 1-3
ROWS_PER_IMAGE = {1: 18, 2: 18, 3: 17}  # ceil(n / 15) rows of 14-15 turns


@pytest.fixture(scope="module")
def vg_build(realdata, tmp_path_factory):
    out = tmp_path_factory.mktemp("vg") / "built"
    report = build_source("vg", realdata / "visual_genome", out, progress=False, options={"check_images": False})
    return out, report


@pytest.fixture
def vg_files(realdata) -> tuple[list, list]:
    """Fresh copies of the real image_data.json and region_descriptions.json, for tests to break."""
    root = realdata / "visual_genome"
    return (json.loads((root / "image_data.json").read_text()),
            json.loads((root / "region_descriptions.json").read_text()))


def write_release(root: Path, image_data, regions, *, raw_regions: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "image_data.json").write_text(json.dumps(image_data))
    (root / "region_descriptions.json").write_text(raw_regions if raw_regions is not None else json.dumps(regions))
    return root


def load(out: Path, split: str = "train") -> list[dict]:
    return datasets.load_dataset(str(out), split=split).to_list()


def test_real_sample_counts(vg_build):
    out, report = vg_build
    assert report.written == {"train": {"region_caption": 53}}
    assert report.regions["train"] == 773
    assert report.total_skipped == 0
    saved = json.loads((out / "build_report.json").read_text())
    assert saved["total_rows"] == 53
    assert {Path(item["path"]).name for item in saved["inputs"]} == {"image_data.json", "region_descriptions.json"}


def test_every_region_exactly_once_in_rows_of_at_most_15(vg_build, vg_files):
    out, _ = vg_build
    rows = load(out)
    per_image = Counter(row["image_id"] for row in rows)
    assert per_image == {str(k): v for k, v in ROWS_PER_IMAGE.items()}
    used = [region["source_id"] for row in rows for region in row["regions"]]
    _, records = vg_files
    expected = [str(r["region_id"]) for record in records for r in record["regions"]]
    assert sorted(used) == sorted(expected) and len(set(used)) == 773
    for row in rows:
        validate(row)
        assert 14 <= len(row["regions"]) <= 15
        turns = row["conversations"]
        assert [region_refs(t["value"]) for t in turns[::2]] == [[k] for k in range(1, len(row["regions"]) + 1)]
        assert [t["value"] for t in turns[1::2]] == [r["label"] for r in row["regions"]]
        assert row["task"] == "region_caption" and row["variant"] == "release" and row["references"] == []
        meta = json.loads(row["meta"])
        assert meta["vg_image_id"] == int(row["image_id"]) and "coco_id" in meta and "flickr_id" in meta


def test_named_region_and_image_paths(vg_build):
    out, _ = vg_build
    rows = load(out)
    row = next(row for row in rows if any(r["source_id"] == "1382" for r in row["regions"]))
    clock = next(r for r in row["regions"] if r["source_id"] == "1382")
    # x=421, y=57, width=82, height=139 -> xyxy
    assert clock["bbox"] == [421.0, 57.0, 503.0, 196.0]
    assert clock["label"] == "the clock is green in colour"
    assert row["image"]["path"] == "VG_100K_2/1.jpg" and (row["width"], row["height"]) == (800, 600)
    assert next(r for r in rows if r["image_id"] == "2")["image"]["path"] == "VG_100K/2.jpg"
    # trailing whitespace of a phrase is dropped ("shade is along the street ")
    assert "shade is along the street" in {r["label"] for row in rows for r in row["regions"]}


def test_ids_stable_across_builds(vg_build, realdata, tmp_path):
    out, _ = vg_build
    build_source("vg", realdata / "visual_genome", tmp_path / "again", progress=False)
    first, second = load(out), load(tmp_path / "again")
    assert first == second
    assert len({row["id"] for row in first}) == 53
    assert {row["id"] for row in first} >= {"vg:train:1:0", "vg:train:1:17", "vg:train:3:16"}


def test_held_out_images_become_one_row_per_region(vg_files, tmp_path):
    root = write_release(tmp_path / "raw", *vg_files)
    (root / "heldout.txt").write_text("# held-out images\n2\n")
    report = build_source("vg", root, tmp_path / "out", options={"test_image_ids": "heldout.txt"}, progress=False)
    assert report.written == {"train": {"region_caption": 35}, "test": {"region_caption": 256}}
    test_rows = load(tmp_path / "out", "test")
    assert {row["image_id"] for row in test_rows} == {"2"}
    first = next(row for row in test_rows if row["id"] == "vg:test:2:1387")
    validate(first)
    assert first["references"] == ["walk sign is lit up"] == [first["conversations"][1]["value"]]
    assert first["regions"][0]["bbox"] == [465.0, 193.0, 508.0, 210.0]
    assert "2" not in {row["image_id"] for row in load(tmp_path / "out")}


def grit_file(image_data: list, records: list) -> dict:
    """GRiT's COCO-format layout of some real images: one 'object' annotation per region, with a caption."""
    images = [{"id": info["image_id"], "file_name": f"{info['image_id']}.jpg", "width": info["width"],
               "height": info["height"]} for info in image_data]
    annotations = [{"id": r["region_id"], "image_id": r["image_id"], "category_id": 1, "iscrowd": 0,
                    "area": r["width"] * r["height"], "bbox": [r["x"], r["y"], r["width"], r["height"]],
                    "caption": r["phrase"]} for record in records for r in record["regions"]]
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "object"}]}


def test_grit_layout(vg_files, tmp_path):
    image_data, records = vg_files
    folder = tmp_path / "grit" / "VG_preprocessed_annotations"
    folder.mkdir(parents=True)
    (folder / "train.json").write_text(json.dumps(grit_file(image_data[:2], records[:2])))
    (folder / "test.json").write_text(json.dumps(grit_file(image_data[2:], records[2:])))
    report = build_source("vg", tmp_path / "grit", tmp_path / "out", progress=False)
    assert report.written == {"train": {"region_caption": 36}, "test": {"region_caption": 255}}
    assert report.regions == {"train": 518, "test": 255}
    train = load(tmp_path / "out")
    for row in train:
        validate(row)
        assert row["variant"] == "grit" and row["image"]["path"] == f"images/{row['image_id']}.jpg"
    clock = next(r for row in train for r in row["regions"] if r["source_id"] == "1382")
    assert clock["bbox"] == [421.0, 57.0, 503.0, 196.0] and clock["label"] == "the clock is green in colour"
    test = load(tmp_path / "out", "test")
    assert all(len(row["regions"]) == 1 and row["references"] for row in test)


# ----- bad input --------------------------------------------------------------------------------------------------
def test_records_that_do_not_zip_stop_the_build(vg_files, tmp_path):
    image_data, records = vg_files
    root = write_release(tmp_path / "raw", [image_data[1], image_data[0], image_data[2]], records)
    with pytest.raises(SourceFileError, match=r"region_descriptions\.json at record 0: record 0 is image 1 but "
                                              r"entry 0 of image_data\.json is image 2"):
        build_source("vg", root, tmp_path / "out", progress=False)
    assert no_output_left(tmp_path / "out")

    write_release(root, image_data, records[:2])
    with pytest.raises(SourceFileError, match=r"ends after 2 records while image_data\.json continues"):
        build_source("vg", root, tmp_path / "out", progress=False)
    assert no_output_left(tmp_path / "out")


def test_truncated_json_and_nan_literal_are_errors(vg_files, tmp_path):
    image_data, records = vg_files
    text = json.dumps(records)
    root = write_release(tmp_path / "raw", image_data, records, raw_regions=text[: len(text) // 2])
    with pytest.raises(SourceFileError, match=r"region_descriptions\.json at record 2: invalid or truncated"):
        build_source("vg", root, tmp_path / "out", progress=False)
    records[0]["regions"][0]["x"] = float("nan")  # json.dumps writes the non-JSON literal NaN
    write_release(root, image_data, records)
    with pytest.raises(SourceFileError, match=r"region_descriptions\.json.*invalid or truncated JSON"):
        build_source("vg", root, tmp_path / "out", progress=False)
    assert no_output_left(tmp_path / "out")


@pytest.mark.parametrize(("change", "reason"), [
    ({"phrase": None}, "missing_key"),
    ({"width": 0}, "bad_box_degenerate"),
    ({"height": -20}, "bad_box_degenerate"),
    ({"x": 900}, "bad_box_outside_image"),
    ({"x": "NaN"}, "bad_box_format"),  # numbers must be numbers, not strings
    ({"x": "12"}, "bad_box_format"),
    ({"x": True}, "bad_box_format"),
    ({"y": [1, 2]}, "bad_box_format"),
    ({"phrase": "   "}, "empty_phrase"),
    ({"image_id": 2}, "image_mismatch"),
])
def test_bad_region_is_a_counted_skip(vg_files, tmp_path, change, reason):
    image_data, records = vg_files
    target = records[0]["regions"][0]
    for key, value in change.items():
        if value is None:
            del target[key]
        else:
            target[key] = value
    root = write_release(tmp_path / "raw", image_data, records)
    report = build_source("vg", root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {reason: 1}
    assert report.regions["train"] == 772
    assert f"region id={target['region_id']}" in report.skip_examples[reason][0]


def test_duplicate_ids_are_counted_skips(vg_files, tmp_path):
    image_data, records = vg_files
    records[0]["regions"][1]["region_id"] = records[0]["regions"][0]["region_id"]
    image_data.append(dict(image_data[2]))
    records.append(json.loads(json.dumps(records[2])))
    root = write_release(tmp_path / "raw", image_data, records)
    report = build_source("vg", root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"duplicate_id": 2}  # one region, one image
    assert report.regions["train"] == 772
    rows = load(tmp_path / "out")
    assert len({row["id"] for row in rows}) == len(rows) == 53


def test_image_without_size_or_regions_list(vg_files, tmp_path):
    image_data, records = vg_files
    del image_data[0]["width"]
    records[1]["regions"] = {"not": "a list"}
    root = write_release(tmp_path / "raw", image_data, records)
    report = build_source("vg", root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"missing_key": 1, "wrong_record_type": 1}
    assert report.written["train"]["region_caption"] == 17


def test_grit_bad_files(vg_files, tmp_path):
    image_data, records = vg_files
    folder = tmp_path / "grit" / "VG_preprocessed_annotations"
    folder.mkdir(parents=True)
    data = grit_file(image_data, records)
    data["annotations"][0]["image_id"] = 99
    del data["annotations"][1]["caption"]
    (folder / "train.json").write_text(json.dumps(data))
    report = build_source("vg", tmp_path / "grit", tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"missing_image": 1, "missing_key": 1}
    assert report.regions["train"] == 771
    (folder / "train.json").write_text(json.dumps([data]))
    with pytest.raises(SourceFileError, match=r"train\.json at byte 0: the top level is not a JSON object"):
        build_source("vg", tmp_path / "grit", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists()


def test_image_url_escaping_the_root_is_a_counted_skip(vg_files, tmp_path):
    image_data, records = vg_files
    image_data[0]["url"] = "https://cs.stanford.edu/people/../../1.jpg"  # folder '..' leaves the raw root
    image_data[1]["url"] = "https://cs.stanford.edu/people/rak248/VG_100K/.hidden"
    root = write_release(tmp_path / "raw", image_data, records)
    report = build_source("vg", root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"unsafe_image_path": 2}
    assert {row["image_id"] for row in load(tmp_path / "out")} == {"3"}


@pytest.mark.parametrize(("annotations", "image_dir"), [
    ("annotations", "images"),                    # GRiT's own datasets/vg layout
    ("", "vg_all"),                               # GPT4RoI's visual_genome/train.json + vg_all/ (soft links)
    ("VG_preprocessed_annotations", "images"),    # the download's folder name
])
def test_grit_files_and_pictures_found_where_the_releases_put_them(vg_files, tmp_path, annotations, image_dir):
    image_data, records = vg_files
    root = tmp_path / "grit"
    (root / annotations).mkdir(parents=True, exist_ok=True)
    (root / annotations / "train.json").write_text(json.dumps(grit_file(image_data, records)))
    pictures = tmp_path / "elsewhere"
    pictures.mkdir()
    for info in image_data:
        (pictures / f"{info['image_id']}.jpg").touch()
    (root / image_dir).symlink_to(pictures)  # one folder of every VG picture, linked in
    options = {"check_images": True, "max_skip_share": 0.0}
    report = build_source("vg", root, tmp_path / "out", progress=False, options=options)
    assert report.written == {"train": {"region_caption": 53}} and report.total_skipped == 0
    assert {row["image"]["path"] for row in load(tmp_path / "out")} == {f"{image_dir}/{i}.jpg" for i in (1, 2, 3)}


@pytest.mark.parametrize(("change", "reason"), [
    ({"width": float("inf")}, None),  # Infinity: ijson refuses the literal, the file is named
    ({"width": "800"}, "bad_image_size"),
    ({"width": 2 ** 40}, "bad_image_size"),
    ({"height": [600]}, "bad_image_size"),
    ({"id": [1]}, "bad_id"),
])
def test_grit_hostile_images(vg_files, tmp_path, change, reason):
    image_data, records = vg_files
    data = grit_file(image_data, records)
    data["images"][0].update(change)
    (tmp_path / "grit" / "annotations").mkdir(parents=True)
    (tmp_path / "grit" / "annotations" / "train.json").write_text(json.dumps(data))
    if reason is None:
        with pytest.raises(SourceFileError, match=r"train\.json at record \d+: invalid or truncated JSON"):
            build_source("vg", tmp_path / "grit", tmp_path / "out", progress=False)
        return
    report = build_source("vg", tmp_path / "grit", tmp_path / "out", progress=False)
    assert report.skipped["train"][reason] == 1
    assert report.written["train"]["region_caption"] == 35  # image 1 (18 rows of its regions) is gone
