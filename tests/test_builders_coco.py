"""The COCO builder on the real 2017 sample, its CLI, and its handling of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from builders.build import build_source, make_builder
from builders.errors import SourceFileError, StrictModeError
from builders.placeholders import region_refs
from builders.schema import validate

SAMPLE = "coco/coco_mini_2017"


@pytest.fixture(scope="module")
def coco_build(realdata, tmp_path_factory):
    out = tmp_path_factory.mktemp("coco") / "built"
    report = build_source("coco", realdata / SAMPLE, out, progress=False)
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


def test_ids_and_bytes_stable_across_builds(coco_build, realdata, tmp_path):
    out, _ = coco_build
    again = tmp_path / "again"
    build_source("coco", realdata / SAMPLE, again, progress=False)
    first = datasets.load_dataset(str(out), split="train").to_list()
    second = datasets.load_dataset(str(again), split="train").to_list()
    assert first == second


def test_generator_based_builder_path(realdata, tmp_path):
    builder = make_builder("coco", realdata / SAMPLE, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    dataset = builder.as_dataset(split="train")
    assert len(dataset) == 80
    assert dataset.features["regions"].feature["bbox"].length == 4


def test_cli_build_and_strict(realdata, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "gpt4roi.cli", "build", "source=coco",
               f"raw_root={realdata / SAMPLE}", f"out={out}"]
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
    root = tmp_path / "raw"
    root.mkdir()
    data = json.loads((realdata / SAMPLE / "instances_train2017.json").read_text())
    data["annotations"] = [a for a in data["annotations"] if not a["iscrowd"]]  # so strict mode sees our skip
    mutate(data)
    (root / "instances_train2017.json").write_text(json.dumps(data))
    return root


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
