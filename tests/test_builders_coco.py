"""The COCO builder on the real 2017 sample, its CLI, and its handling of bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from builders.build import build_source, make_builder
from builders.errors import BuildRejected, SourceFileError, StrictModeError
from builders.placeholders import region_refs
from builders.schema import validate

SAMPLE = "coco/coco_mini_2017"


def linked_root(base: Path, data: dict, *, annotation: Path | None = None) -> Path:
    """A raw root laid out as GPT4RoI's README says ("soft link them to this directory"): the annotation file
    linked (or written) into ``annotations/``, ``train2017`` a symlink to the images on another disk.

    The pictures are empty files: the builder checks that they exist (a stat), it never decodes them.
    """
    root = base / "raw"
    (root / "annotations").mkdir(parents=True)
    target = root / "annotations" / "instances_train2017.json"
    if annotation is not None:
        target.symlink_to(annotation)
    else:
        target.write_text(json.dumps(data))
    disk = base / "disk2" / "train2017"
    disk.mkdir(parents=True)
    for image in data["images"]:
        name = image.get("file_name") if isinstance(image, dict) else None
        if isinstance(name, str) and name and "/" not in name and name.isascii():
            (disk / name).touch()
    (root / "train2017").symlink_to(disk)
    return root


def real_data(realdata: Path) -> dict:
    return json.loads((realdata / SAMPLE / "instances_train2017.json").read_text())


@pytest.fixture(scope="module")
def coco_root(realdata, tmp_path_factory) -> Path:
    return linked_root(tmp_path_factory.mktemp("coco"), real_data(realdata),
                       annotation=realdata / SAMPLE / "instances_train2017.json")


@pytest.fixture(scope="module")
def coco_build(coco_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco") / "built"
    report = build_source("coco", coco_root, out, progress=False)
    return out, report


def test_real_sample_counts(coco_build):
    out, report = coco_build
    # 80 images, 739 annotations of which 8 are crowd (docs/formats.md#real-samples): 731 regions in 80 rows.
    assert report.written == {"train": {"region_category": 80}}
    assert report.regions["train"] == 731
    assert dict(report.skipped["train"]) == {"crowd_annotation": 8}
    saved = json.loads((out / "build_report.json").read_text())
    assert saved["total_rows"] == 80 and saved["rows_skipped"] == {"train": {"crowd_annotation": 8}}
    assert saved["inputs"][0]["path"].endswith("instances_train2017.json")
    assert len(saved["inputs"][0]["sha256"]) == 64


def test_rows_round_trip_and_validate(coco_build):
    out, _ = coco_build
    loaded = datasets.load_dataset(str(out), split="train")
    assert len(loaded) == 80
    rows = {row["id"]: row for row in loaded}
    for row in rows.values():
        validate(row)
        turns = row["conversations"]
        assert len(turns) == 2 * len(row["regions"])
        assert [region_refs(t["value"]) for t in turns[::2]] == [[k] for k in range(1, len(row["regions"]) + 1)]
        assert [t["value"] for t in turns[1::2]] == [r["label"] for r in row["regions"]]
    row = rows["coco:train:790"]
    assert row["image"]["path"] == "train2017/000000000790.jpg"
    plant = next(r for r in row["regions"] if r["source_id"] == "19318")
    # xywh [128.48, 2.07, 113.65, 162.08] -> xyxy, stored as float32
    assert plant["bbox"] == pytest.approx([128.48, 2.07, 242.13, 164.15], abs=1e-4)
    assert plant["label"] == "potted plant"
    assert "potted plant" in row["conversations"][0]["value"]  # the vocabulary opens the conversation


def test_ids_and_bytes_stable_across_builds(coco_build, coco_root, tmp_path):
    out, _ = coco_build
    again = tmp_path / "again"
    build_source("coco", coco_root, again, progress=False)
    first = datasets.load_dataset(str(out), split="train").to_list()
    second = datasets.load_dataset(str(again), split="train").to_list()
    assert first == second


def test_generator_based_builder_path(coco_root, tmp_path):
    builder = make_builder("coco", coco_root, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    assert len(dataset) == 80
    assert dataset.features["regions"].feature["bbox"].length == 4


def test_cli_build_and_strict(coco_root, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "gpt4roi.cli", "build", "source=coco", f"raw_root={coco_root}", f"out={out}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "crowd_annotation: 8" in done.stdout
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00001.parquet"]

    strict = subprocess.run(command[:-1] + [f"out={tmp_path / 'strict'}", "strict=true"],
                            capture_output=True, text=True, check=False)
    assert strict.returncode == 1
    assert "crowd_annotation" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "strict").exists()


def _raw_copy(realdata: Path, tmp_path: Path, mutate) -> Path:
    data = real_data(realdata)
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]  # so strict mode sees our skip
    mutate(data)
    return linked_root(tmp_path, data)


def _first_ann(data: dict) -> dict:
    return next(a for a in data["annotations"] if not a["iscrowd"])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: _first_ann(d).pop("bbox"), "missing_key"),
        (lambda d: _first_ann(d).update(bbox=[10, 10, -4, 5]), "bad_box_degenerate"),
        (lambda d: _first_ann(d).update(bbox=[10, 10, 0, 0]), "bad_box_degenerate"),
        (lambda d: _first_ann(d).update(bbox=[5000, 5000, 20, 20]), "bad_box_outside_image"),
        (lambda d: _first_ann(d).update(bbox=[10, float("nan"), 20, 20]), "bad_box_nonfinite"),
        (lambda d: d["annotations"].append(dict(_first_ann(d))), "duplicate_id"),
        (lambda d: _first_ann(d).update(category_id=999), "unknown_category"),
        (lambda d: _first_ann(d).update(image_id=-7), "missing_image"),
    ],
)
def test_bad_records_are_counted_skips(realdata, tmp_path, mutate, reason):
    root = _raw_copy(realdata, tmp_path, mutate)
    report = build_source("coco", root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {reason: 1}
    assert report.regions["train"] == (731 if reason == "duplicate_id" else 730)
    with pytest.raises(StrictModeError, match=reason):
        build_source("coco", root, tmp_path / "strict", strict=True, progress=False)
    assert not (tmp_path / "strict").exists()


def test_unreadable_files_are_errors_without_output(realdata, tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    original = (realdata / SAMPLE / "instances_train2017.json").read_bytes()
    cases = {
        "truncated": (original[: len(original) // 2], r"invalid JSON.*expected a complete JSON document"),
        "wrong top-level type": (b"[]", r"top level is a JSON array \(expected a JSON object\)"),
        "missing images": (b'{"annotations": [], "categories": []}', r"missing top-level key 'images'"),
        "invalid UTF-8": (original[:100] + b"\xff\xfe" + original[102:], r"invalid JSON"),
    }
    for name, (payload, message) in cases.items():
        (root / "instances_train2017.json").write_bytes(payload)
        with pytest.raises(SourceFileError, match=message) as info:
            build_source("coco", root, tmp_path / "out", progress=False)
        assert "instances_train2017.json" in str(info.value), name
        assert not (tmp_path / "out").exists(), name
    shutil.rmtree(root)


def test_image_path_escaping_the_raw_root_is_skipped(realdata, tmp_path):
    def escape(data):
        data["images"][0]["file_name"] = "../../../etc/passwd"

    root = _raw_copy(realdata, tmp_path, escape)
    report = build_source("coco", root, tmp_path / "out", progress=False)
    assert report.skipped["train"]["unsafe_image_path"] == 1
    assert report.written["train"]["region_category"] == 79


# ----- real layouts: symlinks, missing images -------------------------------------------------------------------------
def test_symlinked_image_folder_and_linked_files_are_followed(coco_root, coco_build, realdata, tmp_path):
    """GPT4RoI's README has users soft-link their image folders: every row must survive that layout."""
    assert (coco_root / "train2017").is_symlink() and (coco_root / "annotations/instances_train2017.json").is_symlink()
    _, report = coco_build
    assert report.written == {"train": {"region_category": 80}} and "unsafe_image_path" not in report.skipped["train"]
    # Per-file links too: a plain folder whose pictures are links to files elsewhere.
    data = real_data(realdata)
    root = linked_root(tmp_path, data)
    (root / "train2017").unlink()
    (root / "train2017").mkdir()
    for image in data["images"]:
        (root / "train2017" / image["file_name"]).symlink_to(tmp_path / "disk2" / "train2017" / image["file_name"])
    assert build_source("coco", root, tmp_path / "out", progress=False).written == report.written


def test_missing_images_are_counted_and_a_wrong_image_dir_fails(realdata, tmp_path):
    data = real_data(realdata)
    root = linked_root(tmp_path, data)
    gone = sorted(image["file_name"] for image in data["images"])[:3]
    for name in gone:
        (tmp_path / "disk2" / "train2017" / name).unlink()
    report = build_source("coco", root, tmp_path / "out", progress=False)
    assert report.skipped["train"]["image_missing"] == 3 and report.written["train"]["region_category"] == 77
    assert [example.split(": ", 1)[1].split(" ")[0] for example in report.skip_examples["image_missing"]] == \
        [f"train2017/{name}" for name in gone]

    # A wrong image_dir: every image is missing, so the build stops with the reason, the count and an example.
    with pytest.raises(BuildRejected, match=r"coco/train kept no rows; skips by reason: image_missing: 80 \(e\.g\. "
                                            r"row 'coco:train:\d+': val2017/\d+\.jpg not found"):
        build_source("coco", root, tmp_path / "wrong", progress=False, options={"image_dir": "val2017"})
    assert not (tmp_path / "wrong").exists()
    # Over max_skip_share (3 of 80 is 4%): refused too.
    with pytest.raises(BuildRejected, match=r"skipped 11 of 88 records \(12% > max_skip_share=0\.1\)"):
        build_source("coco", root, tmp_path / "share", progress=False, options={"max_skip_share": 0.1})


def test_cli_exits_non_zero_with_reasons_when_no_row_is_kept(coco_root, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "gpt4roi.cli", "build", "source=coco", f"raw_root={coco_root}", f"out={out}",
               "source.options.image_dir=images"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert "coco/train kept no rows; skips by reason: image_missing: 80" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
    annotations_only = subprocess.run(command + ["source.options.check_images=false"], capture_output=True,
                                      text=True, check=False)
    assert annotations_only.returncode == 0, annotations_only.stderr


def test_output_folder_gets_the_usual_permissions(coco_build):
    out, _ = coco_build
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "data").stat().st_mode) == 0o777 & ~umask


# ----- hostile records: each is one counted skip ----------------------------------------------------------------------
def _first_image(data: dict) -> dict:
    return next(i for i in data["images"] if i["id"] == _first_ann(data)["image_id"])


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: _first_image(d).update(width=float("inf")), "bad_image_size"),
        (lambda d: _first_image(d).update(width="abc"), "bad_image_size"),
        (lambda d: _first_image(d).update(width="640"), "bad_image_size"),
        (lambda d: _first_image(d).update(height=2 ** 40), "bad_image_size"),
        (lambda d: _first_image(d).update(height=True), "bad_image_size"),
        (lambda d: _first_image(d).update(id=[1, 2]), "bad_id"),
        (lambda d: _first_ann(d).update(id=[1]), "bad_id"),
        (lambda d: _first_ann(d).update(id=""), "bad_id"),  # found by the slow fuzz profile: int('') crashed
        (lambda d: _first_ann(d).update(image_id={"id": 3}), "bad_id"),
        (lambda d: _first_ann(d).update(category_id=[1]), "unknown_category"),
        (lambda d: d["categories"][-1].pop("name"), "missing_key"),
        (lambda d: d["categories"][-1].update(name="<image>"), "bad_category"),
        (lambda d: d["categories"][-1].update(name="a <region3> b"), "bad_category"),
        (lambda d: d["categories"][-1].update(name="brush\ud800"), "bad_category"),
        (lambda d: _first_ann(d).update(bbox=["10", 10, 20, 20]), "bad_box_format"),
        (lambda d: _first_ann(d).update(bbox=[10, 10, 20, True]), "bad_box_format"),
        (lambda d: _first_image(d).update(file_name=["a.jpg"]), "unsafe_image_path"),
    ],
)
def test_hostile_records_are_counted_skips(realdata, tmp_path, mutate, reason):
    root = _raw_copy(realdata, tmp_path, mutate)
    report = build_source("coco", root, tmp_path / "out", progress=False)
    assert reason in report.skipped["train"], dict(report.skipped["train"])
    assert 75 <= report.written["train"]["region_category"] <= 80


def test_box_clipped_under_one_pixel_is_skipped(realdata, tmp_path):
    """Size is checked after clipping: a box hanging 0.5 px into the image is no region."""
    def sliver(data):
        image = _first_image(data)
        _first_ann(data).update(bbox=[image["width"] - 0.5, 10, 30, 30])

    report = build_source("coco", _raw_copy(realdata, tmp_path, sliver), tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"bad_box_degenerate": 1}
    assert "once clipped" in report.skip_examples["bad_box_degenerate"][0]


def test_mixed_integer_and_string_ids_are_ordered(realdata, tmp_path):
    def mixed(data):
        image = data["images"][0]
        old = image["id"]
        image["id"] = "img-a"
        for ann in data["annotations"]:
            if ann["image_id"] == old:
                ann["image_id"] = "img-a"

    report = build_source("coco", _raw_copy(realdata, tmp_path, mixed), tmp_path / "out", progress=False)
    assert report.written["train"]["region_category"] == 80
    assert datasets.load_dataset(str(tmp_path / "out"), split="train")[-1]["id"] == "coco:train:img-a"


def test_lone_surrogate_in_a_row_is_skipped_not_a_failed_write(realdata, tmp_path):
    """A lone surrogate reaches rows through the metadata here (a file name); the row is skipped, the rest written."""
    def surrogate(data):
        _first_image(data)["file_name"] = "x\ud800.jpg"

    report = build_source("coco", _raw_copy(realdata, tmp_path, surrogate), tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"text_not_unicode": 1}
    assert report.written["train"]["region_category"] == 79
