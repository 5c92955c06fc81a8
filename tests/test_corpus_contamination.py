"""The contamination check on constructed overlaps (builders.corpus.contamination)."""

from __future__ import annotations

import json
from pathlib import Path

from corpus_rows import schema_row, write_build
from omegaconf import OmegaConf
from PIL import Image

from builders.corpus import contamination
from builders.storage.datafolder import list_splits

REFCOCO_IMAGE = "images/mscoco/images/train2014/COCO_train2014_{:012d}.jpg"


def _eval_build(tmp_path: Path) -> Path:
    """RefCOCO evaluation rows on COCO images 1 and 2 (2014 names), one box each."""
    rows = [
        schema_row("refcoco", "validation", "1", image=REFCOCO_IMAGE.format(1), image_id="1",
                   boxes=[[100, 100, 200, 200]]),
        schema_row("refcoco", "testA", "2", image=REFCOCO_IMAGE.format(2), image_id="2",
                   boxes=[[0, 0, 50, 50]]),
        schema_row("refcoco", "testA", "3", image=REFCOCO_IMAGE.format(2), image_id="2",
                   boxes=[[300, 300, 400, 400]]),
    ]
    return write_build(tmp_path / "refcoco_eval", rows, source="refcoco")


def _train_build(tmp_path: Path) -> Path:
    rows = [
        # COCO 2017 name of eval image 1; box IoU 0.9025 with the eval box (shifted by 5 px) -> a region overlap
        schema_row("coco", "train", "1", image="train2017/000000000001.jpg", image_id="1",
                   boxes=[[105, 100, 205, 200], [500, 10, 600, 90]]),
        # same image, box IoU ~0.82 (shifted by 10 px): an image overlap without a region overlap
        schema_row("coco", "train", "1b", image="train2017/000000000001.jpg", image_id="1",
                   boxes=[[110, 100, 210, 200]]),
        # a clean image
        schema_row("coco", "train", "9", image="train2017/000000000009.jpg", image_id="9", boxes=[[0, 0, 10, 10]]),
    ]
    return write_build(tmp_path / "coco_train", rows, source="coco")


def _vg_build(tmp_path: Path) -> Path:
    """Visual Genome rows: one on COCO image 2 (coco_id in meta, at half resolution), one VG-only."""
    rows = [
        schema_row("vg", "train", "77", image="VG_100K/77.jpg", image_id="77", width=320, height=240,
                   boxes=[[0, 0, 25, 25]], meta={"coco_id": 2, "flickr_id": None}),
        schema_row("vg", "train", "78", image="VG_100K/78.jpg", image_id="78", boxes=[[0, 0, 50, 50]],
                   meta={"coco_id": None, "flickr_id": None}),
    ]
    return write_build(tmp_path / "vg_train", rows, source="vg")


def _check(train: Path, evals: list[Path], iou: float = 0.9) -> dict:
    splits = [pair for folder in evals for pair in contamination.eval_splits_of(folder, [])]
    checker = contamination.ContaminationChecker(contamination.build_eval_index(splits), iou=iou)
    for split in list_splits(train):
        checker.check_split(train.name, split)
    return checker.to_dict()


def _cell(report: dict, train: str, label: str) -> dict:
    (cell,) = [row for row in report["overlaps"] if row["train"] == train and row["eval"] == label]
    return cell


def test_same_coco_id_under_2014_and_2017_names_overlaps(tmp_path):
    report = _check(_train_build(tmp_path), [_eval_build(tmp_path)])
    cell = _cell(report, "coco_train", "refcoco_eval:validation")
    assert cell["overlapping_images"] == 1
    assert cell["train_rows"] == 2             # rows 1 and 1b show eval image 1; row 9 is clean
    assert cell["train_regions_iou"] == 1      # only the 5-px shift reaches IoU 0.9
    assert cell["train_rows_with_region"] == 1
    assert cell["eval_rows_seen"] == 1 and cell["eval_rows"] == 1
    assert [row["eval"] for row in report["overlaps"]] == ["refcoco_eval:validation"]  # testA images unseen
    assert report["eval_splits"] == {"refcoco_eval:testA": {"rows": 2, "images": 1},
                                     "refcoco_eval:validation": {"rows": 1, "images": 1}}
    assert report["train_rows"] == {"coco_train": 3}


def test_iou_threshold_decides_region_overlaps(tmp_path):
    report = _check(_train_build(tmp_path), [_eval_build(tmp_path)], iou=0.8)
    assert _cell(report, "coco_train", "refcoco_eval:validation")["train_regions_iou"] == 2
    report = _check(_train_build(tmp_path), [_eval_build(tmp_path)], iou=0.95)
    assert _cell(report, "coco_train", "refcoco_eval:validation")["train_regions_iou"] == 0


def test_visual_genome_coco_id_overlaps_at_another_resolution(tmp_path):
    report = _check(_vg_build(tmp_path), [_eval_build(tmp_path)])
    cell = _cell(report, "vg_train", "refcoco_eval:testA")
    assert cell["overlapping_images"] == 1 and cell["train_rows"] == 1
    # the VG copy is 320x240: its box [0,0,25,25] is the eval box [0,0,50,50] of the 640x480 original
    assert cell["train_regions_iou"] == 1
    assert cell["eval_rows_seen"] == 2 and cell["eval_rows_seen_pct"] == 100.0
    assert len(report["overlaps"]) == 1


def test_nothing_shared_reports_no_overlap(tmp_path):
    clean = write_build(tmp_path / "clean", [schema_row("coco", "train", "5", image="train2017/000000000005.jpg",
                                                        image_id="5", boxes=[[1, 1, 9, 9]])])
    report = _check(clean, [_eval_build(tmp_path)])
    assert report["overlaps"] == []
    assert "No training row shares an image" in contamination.markdown_table(report)


def test_perceptual_hash_finds_a_renamed_copy(tmp_path):
    """A copy under an unrelated name and id is only found by its pixels."""
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    picture = Image.new("RGB", (64, 48), "white")
    for x in range(0, 64, 8):
        picture.paste((x * 4, 255 - x * 4, 40), (x, 0, x + 4, 48))
    picture.save(root / "a" / "eval.png")
    picture.resize((128, 96)).save(root / "b" / "renamed.jpg", quality=90)
    Image.new("RGB", (64, 48), (10, 200, 10)).save(root / "b" / "other.png")
    evals = write_build(tmp_path / "ev", [schema_row("mine", "test", "1", image="a/eval.png", image_id="e1",
                                                     width=64, height=48, boxes=[[0, 0, 10, 10]])])
    train = write_build(tmp_path / "tr", [
        schema_row("theirs", "train", "1", image="b/renamed.jpg", image_id="t1", width=128, height=96,
                   boxes=[[0, 0, 20, 20]]),
        schema_row("theirs", "train", "2", image="b/other.png", image_id="t2", width=64, height=48,
                   boxes=[[0, 0, 10, 10]]),
    ])
    assert _check(train, [evals])["overlaps"] == []  # ids alone see nothing
    index = contamination.build_eval_index(contamination.eval_splits_of(evals, []), phash="difference",
                                           max_distance=4, image_root=root)
    checker = contamination.ContaminationChecker(index)
    checker.check_split("tr", list_splits(train)[0])
    report = checker.to_dict()
    assert [(row["train"], row["eval"], row["train_rows"], row["train_regions_iou"])
            for row in report["overlaps"]] == [("tr", "ev:test", 1, 1)]
    assert report["images_not_hashed"] == 0


def test_command_writes_json_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "report.json"
    cfg = OmegaConf.create({"train": str(_train_build(tmp_path)), "eval": [str(_eval_build(tmp_path))],
                            "eval_splits": ["validation"], "train_splits": None, "iou": 0.9, "phash": None,
                            "max_hash_distance": 0, "image_root": None, "image_roots": {}, "json": str(out)})
    assert contamination.main(cfg) == 0
    report = json.loads(out.read_text())
    assert list(report["eval_splits"]) == ["refcoco_eval:validation"]
    assert report["overlaps"][0]["train_rows"] == 2
    assert "refcoco_eval:validation" in capsys.readouterr().out
