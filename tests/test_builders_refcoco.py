"""The RefCOCO/+/g builders on fixtures built from the real records of docs/formats.md#refcoco-family.

No real refs pickle is available (docs/formats.md#real-samples). The fixture holds the real first ref of
RefCOCO (ref 0, ann 1719310 on image 581857, three sentences) and the real instance annotation 3007 on image
98304 quoted in the refer fork's README; the box of ann 1719310, the image sizes and the two further refs
(val, testA) are hand-made to match. The pickle is written with ``pickle.dump``, as the release's was.
"""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import datasets
import pytest
from conftest import CodeRunningPickle
from corpus_rows import no_output_left

from builders.build import build_source, make_builder
from builders.errors import BuildRejected, SourceFileError
from builders.placeholders import region_refs, strip_image_token
from builders.schema import validate
from builders.sources.templates import REGION_CAPTION, REGION_CAPTION_SHORT, REGION_CAPTION_SHORT_APPEARANCE

pytestmark = pytest.mark.usefixtures("records_only_builds")

IMAGE_DIR = "images/mscoco/images/train2014"
REF0 = {  # the first ref of RefCOCO, verbatim from docs/formats.md#refcoco-refer-release
    "sent_ids": [0, 1, 2], "file_name": "COCO_train2014_000000581857_16.jpg", "ann_id": 1719310, "ref_id": 0,
    "image_id": 581857, "split": "train", "category_id": 1,
    "sentences": [
        {"tokens": ["the", "lady", "with", "the", "blue", "shirt"], "raw": "THE LADY WITH THE BLUE SHIRT",
         "sent_id": 0, "sent": "the lady with the blue shirt"},
        {"tokens": ["lady", "with", "back", "to", "us"], "raw": "lady w back to us", "sent_id": 1,
         "sent": "lady with back to us"},
        {"tokens": ["blue", "shirt"], "raw": "blue shirt", "sent_id": 2, "sent": "blue shirt"}]}
REF_VAL = {"sent_ids": [3, 4], "file_name": "COCO_train2014_000000098304_1.jpg", "ann_id": 3007, "ref_id": 1,
           "image_id": 98304, "split": "val", "category_id": 18,
           "sentences": [{"tokens": ["small", "dog"], "raw": "small dog", "sent_id": 3, "sent": "small dog"},
                         {"tokens": ["dog", "by", "the", "bench"], "raw": "Dog by the bench", "sent_id": 4,
                          "sent": "dog by the bench"}]}
REF_TESTA = {"sent_ids": [5], "file_name": "COCO_train2014_000000581857_17.jpg", "ann_id": 1719311, "ref_id": 2,
             "image_id": 581857, "split": "testA", "category_id": 1,
             "sentences": [{"tokens": ["man", "in", "red"], "raw": "man in red", "sent_id": 5, "sent": "man in red"}]}
# Verbatim from docs/formats.md#refcoco-refer-release, with the polygon (elided there) closed by hand.
ANN_3007 = {
    "segmentation": [[267.52, 229.75, 263.87, 216.88, 285.0, 220.1, 281.2, 232.05]], "area": 197.299, "iscrowd": 0,
    "image_id": 98304, "bbox": [263.87, 216.88, 21.13, 15.17], "category_id": 18, "id": 3007}
ANN_LADY = {"segmentation": [[103.93, 199.99, 238.15, 199.99, 238.15, 377.41]], "area": 23813.3, "iscrowd": 0,
            "image_id": 581857, "bbox": [103.93, 199.99, 134.22, 177.42], "category_id": 1, "id": 1719310}
ANN_MAN = {"segmentation": [], "area": 9000.0, "iscrowd": 0, "image_id": 581857,
           "bbox": [400.0, 150.0, 90.0, 100.0], "category_id": 1, "id": 1719311}


def instances() -> dict:
    return {
        "info": {}, "licenses": [],
        "images": [{"id": 581857, "file_name": "COCO_train2014_000000581857.jpg", "width": 640, "height": 427},
                   {"id": 98304, "file_name": "COCO_train2014_000000098304.jpg", "width": 640, "height": 480}],
        "annotations": [copy.deepcopy(ANN_LADY), copy.deepcopy(ANN_3007), copy.deepcopy(ANN_MAN)],
        "categories": [{"supercategory": "person", "id": 1, "name": "person"},
                       {"supercategory": "animal", "id": 18, "name": "dog"}],
    }


def refs() -> list[dict]:
    return copy.deepcopy([REF0, REF_VAL, REF_TESTA])


def write_refer(root: Path, dataset: str = "refcoco", split_by: str = "unc", *, ref_list=None,
                inst=None) -> Path:
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"refs({split_by}).p").open("wb") as handle:
        pickle.dump(refs() if ref_list is None else ref_list, handle)
    (folder / "instances.json").write_text(json.dumps(instances() if inst is None else inst))
    return root


def build(source: str, root: Path, out: Path, **kwargs):
    return build_source(source, root, out, progress=False, **kwargs)


def load_all(out: Path) -> dict[str, dict]:
    rows = {}
    for split, dataset in datasets.load_dataset(str(out)).items():
        for row in dataset:
            assert row["split"] == split
            rows[row["id"]] = row
    return rows


def question(row: dict) -> str:
    return strip_image_token(row["conversations"][0]["value"])


@pytest.mark.parametrize(("source", "split_by", "task", "templates"), [
    ("refcoco", "unc", "region_caption_short", REGION_CAPTION_SHORT),
    ("refcoco+", "unc", "region_caption_short", REGION_CAPTION_SHORT_APPEARANCE),
    ("refcocog", "umd", "region_caption", REGION_CAPTION),
])
def test_refer_layout(tmp_path, source, split_by, task, templates):
    root = write_refer(tmp_path / "raw", source, split_by)
    report = build(source, root, tmp_path / "out")
    assert report.written == {"train": {task: 3}, "validation": {task: 1}, "testA": {task: 1}}
    assert report.total_skipped == 0
    rows = load_all(tmp_path / "out")
    assert sorted(rows) == sorted([f"{source}:train:0:0", f"{source}:train:0:1", f"{source}:train:0:2",
                                   f"{source}:validation:1", f"{source}:testA:2"])
    asked = {t.format(region="<region1>") for t in templates}
    for row in rows.values():
        validate(row)
        assert row["variant"] == split_by and row["task"] == task and len(row["regions"]) == 1
        assert region_refs(row["conversations"][0]["value"]) == [1] and question(row) in asked
    lady = [rows[f"{source}:train:0:{k}"] for k in range(3)]
    assert [row["conversations"][1]["value"] for row in lady] == [
        "the lady with the blue shirt", "lady with back to us", "blue shirt"]
    assert all(row["references"] == [] for row in lady)
    assert lady[0]["image"]["path"] == f"{IMAGE_DIR}/COCO_train2014_000000581857.jpg"
    assert lady[0]["image_id"] == "581857" and (lady[0]["width"], lady[0]["height"]) == (640, 427)
    assert lady[0]["regions"][0]["label"] == "person" and lady[0]["regions"][0]["source_id"] == "1719310"
    meta = json.loads(lady[1]["meta"])
    assert meta["ref_id"] == 0 and meta["ann_id"] == 1719310 and meta["sent_id"] == 1

    dog = rows[f"{source}:validation:1"]
    # annotation 3007 (docs/formats.md#refcoco-refer-release): xywh [263.87, 216.88, 21.13, 15.17] -> xyxy
    # (float32 storage)
    assert dog["regions"][0]["bbox"] == pytest.approx([263.87, 216.88, 285.0, 232.05], abs=1e-4)
    assert dog["regions"][0]["label"] == "dog"
    assert json.loads(dog["regions"][0]["segmentation"]) == ANN_3007["segmentation"]
    assert dog["references"] == ["small dog", "dog by the bench"]
    assert dog["conversations"][1]["value"] == "small dog"
    assert json.loads(dog["meta"])["sent_ids"] == [3, 4]


def test_refcoco_plus_prompts_never_ask_for_position():
    words = {"left", "right", "top", "bottom", "front", "behind", "middle", "position", "where"}
    for template in REGION_CAPTION_SHORT_APPEARANCE:
        assert not words & set(template.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())


def test_ids_stable_and_generator_path(tmp_path):
    root = write_refer(tmp_path / "raw")
    build("refcoco", root, tmp_path / "a")
    build("refcoco", root, tmp_path / "b")
    assert load_all(tmp_path / "a") == load_all(tmp_path / "b")
    builder = make_builder("refcoco", root, cache_dir=tmp_path / "cache")
    builder.download_and_prepare()
    assert len(builder.as_dataset(split="train")) == 3 and len(builder.as_dataset(split="testA")) == 1


def mdetr_file(ref: dict, ann: dict, image: dict, first_id: int) -> dict:
    """MDETR's refexp_coco_format.py output for one ref: one image entry and one annotation per sentence."""
    images, annotations = [], []
    for k, sentence in enumerate(ref["sentences"]):
        entry_id = first_id + k
        images.append({"file_name": image["file_name"], "height": image["height"], "width": image["width"],
                       "id": entry_id, "original_id": ref["image_id"], "caption": sentence["sent"],
                       "dataset_name": "refcoco", "tokens_negative": [[0, len(sentence["sent"])]]})
        annotations.append({"area": ann["area"], "iscrowd": 0, "image_id": entry_id, "category_id": ann["category_id"],
                            "id": 100 + entry_id, "bbox": ann["bbox"], "original_id": ann["id"],
                            "tokens_positive": [[0, len(sentence["sent"])]]})
    inst = instances()
    return {"info": inst["info"], "licenses": [], "images": images, "annotations": annotations,
            "categories": inst["categories"]}


def test_mdetr_layout_matches_refer(tmp_path):
    inst = instances()
    folder = tmp_path / "mdetr" / "mdetr_annotations"
    folder.mkdir(parents=True)
    (folder / "finetune_refcoco_train.json").write_text(json.dumps(mdetr_file(REF0, ANN_LADY, inst["images"][0], 0)))
    (folder / "finetune_refcoco_val.json").write_text(json.dumps(mdetr_file(REF_VAL, ANN_3007, inst["images"][1], 3)))
    report = build("refcoco", tmp_path / "mdetr", tmp_path / "m")
    assert report.written == {"train": {"region_caption_short": 3}, "validation": {"region_caption_short": 1}}
    mdetr = load_all(tmp_path / "m")
    assert sorted(mdetr) == ["refcoco:train:ann1719310:0", "refcoco:train:ann1719310:1", "refcoco:train:ann1719310:2",
                             "refcoco:validation:ann3007"]
    build("refcoco", write_refer(tmp_path / "raw"), tmp_path / "r")
    refer = load_all(tmp_path / "r")
    for mdetr_id, refer_id in [("refcoco:train:ann1719310:1", "refcoco:train:0:1"),
                               ("refcoco:validation:ann3007", "refcoco:validation:1")]:
        validate(mdetr[mdetr_id])
        for field in ("image", "image_id", "width", "height", "references", "variant", "task"):
            assert mdetr[mdetr_id][field] == refer[refer_id][field]
        assert mdetr[mdetr_id]["regions"][0]["bbox"] == refer[refer_id]["regions"][0]["bbox"]
        assert mdetr[mdetr_id]["conversations"][1] == refer[refer_id]["conversations"][1]
    assert json.loads(mdetr["refcoco:validation:ann3007"]["meta"])["mdetr_image_ids"] == [3, 4]


def test_mdetr_needs_its_own_split_scheme(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(ValueError, match=r"MDETR converted refs\(umd\)\.p only"):
        make_builder("refcocog", tmp_path / "raw", options={"layout": "mdetr", "split_by": "google"})


# ----- bad input ------------------------------------------------------------------------------------------------------
def test_pickle_that_would_run_code_is_refused(tmp_path):
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps([CodeRunningPickle(proof)]))  # the payload does run code under plain pickle
    assert proof.exists()

    marker = tmp_path / "pwned"
    ref_list = refs() + [CodeRunningPickle(marker)]
    root = write_refer(tmp_path / "raw", ref_list=ref_list)
    with pytest.raises(SourceFileError, match=r"refs\(unc\)\.p: refused to load global .*open"):
        build("refcoco", root, tmp_path / "out")
    assert not marker.exists()
    assert no_output_left(tmp_path / "out")


def test_unreadable_pickles_are_errors(tmp_path):
    root = write_refer(tmp_path / "raw", ref_list={"refs": refs()})
    with pytest.raises(SourceFileError, match=r"refs\(unc\)\.p: the pickle holds a dict \(expected a list"):
        build("refcoco", root, tmp_path / "out")
    path = root / "refcoco" / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs())[:50])
    with pytest.raises(SourceFileError, match=r"refs\(unc\)\.p: not a readable pickle"):
        build("refcoco", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_nan_literal_in_instances_is_a_counted_skip(tmp_path):
    """Python's json writes NaN literals; read_json accepts them and the box check refuses the value."""
    inst = instances()
    inst["annotations"][1]["bbox"][0] = float("nan")
    root = write_refer(tmp_path / "raw", inst=inst)
    assert "NaN" in (root / "refcoco" / "instances.json").read_text()
    report = build("refcoco", root, tmp_path / "out")
    assert dict(report.skipped["validation"]) == {"bad_box_nonfinite": 1}
    assert "validation" not in report.written and report.written["train"]["region_caption_short"] == 3


def broken(kind: str) -> tuple[list, dict]:
    ref_list, inst = refs(), instances()
    val_ann = inst["annotations"][1]
    if kind == "missing_key":
        del ref_list[1]["ann_id"]
    elif kind == "zero_size":
        val_ann["bbox"][2] = 0.0
    elif kind == "negative_size":
        val_ann["bbox"][3] = -15.17
    elif kind == "outside":
        val_ann["bbox"][0] = 700.0
    elif kind == "string_nan":
        val_ann["bbox"][1] = "NaN"
    elif kind == "duplicate_ref":
        ref_list.append(copy.deepcopy(ref_list[1]))
    elif kind == "duplicate_ann":
        inst["annotations"].append(copy.deepcopy(val_ann))
    elif kind == "unknown_category":
        val_ann["category_id"] = 999
    elif kind == "missing_annotation":
        ref_list[1]["ann_id"] = 424242
    elif kind == "empty_sentence":
        ref_list[1]["sentences"][0]["sent"] = "  "
    return ref_list, inst


@pytest.mark.parametrize(("kind", "skips", "val_rows"), [
    ("missing_key", {"missing_key": 1}, 0),
    ("zero_size", {"bad_box_degenerate": 1}, 0),
    ("negative_size", {"bad_box_degenerate": 1}, 0),
    ("outside", {"bad_box_outside_image": 1}, 0),
    ("string_nan", {"bad_box_format": 1}, 0),  # numbers must be numbers
    ("duplicate_ref", {"duplicate_id": 1}, 1),
    ("duplicate_ann", {"duplicate_id": 1}, 1),
    ("unknown_category", {"unknown_category": 1}, 0),
    ("missing_annotation", {"missing_annotation": 1}, 0),
    ("empty_sentence", {"empty_sentence": 1}, 1),
])
def test_bad_record_is_a_counted_skip(tmp_path, kind, skips, val_rows):
    ref_list, inst = broken(kind)
    root = write_refer(tmp_path / "raw", ref_list=ref_list, inst=inst)
    report = build("refcoco", root, tmp_path / "out", splits=["validation"])
    assert dict(report.skipped["validation"]) == skips
    assert sum(report.written.get("validation", {}).values()) == val_rows
    if val_rows:
        row = load_all(tmp_path / "out")["refcoco:validation:1"]
        validate(row)
        assert row["references"] == (["dog by the bench"] if kind == "empty_sentence" else ["small dog", "dog by the bench"])


def test_cli_accepts_the_plus_in_refcoco_plus(tmp_path):
    """``source=refcoco+`` is a plain Hydra value (conf/build/source/refcoco+.yaml); options override as usual."""
    import subprocess
    import sys

    root = write_refer(tmp_path / "raw", "refcoco+", "unc")
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "gpt4roi.cli", "build", "source=refcoco+", f"raw_root={root}", f"out={out}",
               "source.options.layout=refer", "split=[train,testA]", "source.options.check_images=false"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "build_report.json").read_text())
    assert report["source"] == "refcoco+" and report["options"]["layout"] == "refer"
    assert report["rows_written"] == {"testA": {"region_caption_short": 1}, "train": {"region_caption_short": 3}}


def test_missing_instances_file_is_an_error(tmp_path):
    root = write_refer(tmp_path / "raw")
    (root / "refcoco" / "instances.json").unlink()
    with pytest.raises(SourceFileError, match=r"refcoco/instances\.json: file not found"):
        build("refcoco", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refs_outside_every_split_are_counted_once(tmp_path):
    ref_list = refs() + [["not", "a", "ref"], {**copy.deepcopy(REF_VAL), "ref_id": 9, "split": "dev"},
                         {**copy.deepcopy(REF_VAL), "ref_id": "9"}]
    root = write_refer(tmp_path / "raw", ref_list=ref_list)
    report = build("refcoco", root, tmp_path / "out")
    assert dict(report.skipped) == {"train": {"wrong_record_type": 1, "unknown_split": 1},
                                    "validation": {"wrong_record_type": 1}}
    assert report.written["validation"] == {"region_caption_short": 1}


def test_2017_image_names_by_option(tmp_path):
    """GPT4RoI reads RefCOCO's pictures from COCO 2017-named files; the images are checked to exist."""
    root = write_refer(tmp_path / "raw")
    (root / "coco_imgs").mkdir()
    for image_id in (581857, 98304):
        (root / "coco_imgs" / f"{image_id:012d}.jpg").touch()
    options = {"image_names": "2017", "image_dir": "coco_imgs", "check_images": True, "max_skip_share": 0.0}
    build("refcoco", root, tmp_path / "out", options=options)
    rows = load_all(tmp_path / "out")
    assert rows["refcoco:validation:1"]["image"]["path"] == "coco_imgs/000000098304.jpg"
    assert {row["image"]["path"] for row in rows.values()} == {"coco_imgs/000000581857.jpg", "coco_imgs/000000098304.jpg"}
    # The default (2014 names) finds none of them there: every row is refused with the reason.
    with pytest.raises(BuildRejected, match=r"image_missing: 3 \(e\.g\. row 'refcoco:train:0:0': "
                                            r"coco_imgs/COCO_train2014_000000581857\.jpg not found"):
        build("refcoco", root, tmp_path / "default", options={"image_dir": "coco_imgs", "check_images": True,
                                                                "max_skip_share": 0.5},
              splits=["train"])
    with pytest.raises(ValueError, match="image_names must be one of"):
        build("refcoco", root, tmp_path / "bad", options={"image_names": "2015"})


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda ref_list, inst: ref_list[1].update(ann_id=[3007]), "bad_id"),
    (lambda ref_list, inst: ref_list[1].update(image_id={"id": 98304}), "bad_id"),
    (lambda ref_list, inst: inst["images"][1].update(width="640"), "bad_image_size"),
    (lambda ref_list, inst: inst["annotations"][1].update(bbox=[263.87, "216.88", 21.13, 15.17]), "bad_box_format"),
    (lambda ref_list, inst: ref_list[1]["sentences"][0].update(sent="the <image> dog"), "schema_image_token_once_at_start"),
    (lambda ref_list, inst: ref_list[1]["sentences"][0].update(sent="a <region2> dog"), "schema_no_placeholders_in_answers"),
    (lambda ref_list, inst: ref_list[1]["sentences"][0].update(sent="dog " * 25_001), "text_too_long"),
    (lambda ref_list, inst: ref_list[1]["sentences"][0].update(sent="dog \ud800"), "text_not_unicode"),
])
def test_hostile_refer_records_are_counted(tmp_path, mutate, reason):
    ref_list, inst = refs(), instances()
    mutate(ref_list, inst)
    root = write_refer(tmp_path / "raw", ref_list=ref_list, inst=inst)
    report = build("refcoco", root, tmp_path / "out", splits=["train", "validation"])
    assert reason in report.skipped["validation"] and report.written["train"]["region_caption_short"] == 3


def test_a_ref_whose_split_is_not_a_string_is_counted_not_a_crash(tmp_path):
    """Found by the slow fuzz profile: a list as ``split`` was hashed and crashed the listing of splits."""
    ref_list = refs()
    ref_list[1]["split"] = ["val"]
    root = write_refer(tmp_path / "raw", ref_list=ref_list, inst=instances())
    report = build("refcoco", root, tmp_path / "out", splits=["train"])
    assert dict(report.skipped["train"]) == {"unknown_split": 1}
    assert report.written["train"]["region_caption_short"] == 3


def test_mdetr_original_id_must_be_an_id(tmp_path):
    root = tmp_path / "raw"
    folder = root / "mdetr_annotations"
    folder.mkdir(parents=True)
    entries = [{"file_name": "COCO_train2014_000000098304.jpg", "height": 480, "width": 640, "id": k,
                "original_id": 98304 if k else [98304], "caption": "small dog"} for k in range(2)]
    anns = [{"area": 1, "iscrowd": 0, "category_id": 18, "image_id": k, "id": k, "bbox": [263.87, 216.88, 21.13, 15.17],
             "original_id": 3007 + k} for k in range(2)]
    (folder / "finetune_refcoco_val.json").write_text(json.dumps(
        {"images": entries, "annotations": anns, "categories": instances()["categories"]}))
    report = build("refcoco", root, tmp_path / "out")
    assert dict(report.skipped["validation"]) == {"bad_id": 1} and report.written["validation"]["region_caption_short"] == 1
