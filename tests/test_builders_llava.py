"""The LLaVA-Instruct builder on the real doc-quoted records, the detection join, and bad input."""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from corpus_rows import no_output_left, rows_by_id
from PIL import Image

from builders.build import build_source
from builders.errors import SourceFileError
from builders.schema import validate
from builders.sources.llava import COCO_CLASSES, LVIS_NAMES_FILE

pytestmark = pytest.mark.usefixtures("records_only_builds")

REAL_FILES = ("conversation_58k.json", "detail_23k.json", "complex_reasoning_77k.json")
# The real sample has no images; the builder needs them for their sizes, so the tests draw stand-ins.
IMAGE_SIZES = {"000000033471": (640, 480), "000000442786": (500, 375), "000000539056": (427, 640),
               "000000215677": (640, 425)}


@pytest.fixture
def raw_root(realdata, tmp_path) -> Path:
    """The real annotation files (linked, not copied) plus stand-in train2017 images of known sizes."""
    root = tmp_path / "llava"
    (root / "train2017").mkdir(parents=True)
    for name in REAL_FILES:
        (root / name).symlink_to(realdata / "llava_instruct" / name)
    for image_id, size in IMAGE_SIZES.items():
        Image.new("RGB", size, "gray").save(root / "train2017" / f"{image_id}.jpg")
    return root


def _replace_file(root: Path, name: str, payload: bytes | str) -> None:
    path = root / name
    path.unlink(missing_ok=True)
    path.write_bytes(payload if isinstance(payload, bytes) else payload.encode())


def _record(image_id: str, turns: list[tuple[str, str]]) -> dict:
    return {"id": image_id, "image": f"{image_id}.jpg", "conversations": [{"from": f, "value": v} for f, v in turns]}


def _write_detections(root: Path, entries: list[dict]) -> None:
    with (root / "llava_150k_bbox_pred_results.pkl").open("wb") as handle:
        pickle.dump(entries, handle)


# ----- the real sample -------------------------------------------------------------------------------------
def test_real_sample_rows(raw_root, tmp_path):
    out = tmp_path / "out"
    report = build_source("llava", raw_root, out, progress=False)
    assert report.written == {"train": {"image_conversation": 4}}
    assert report.regions["train"] == 0 and report.total_skipped == 0
    rows = rows_by_id(out, "train")
    assert sorted(rows) == ["llava:train:complex_reasoning_77k:000000215677",
                            "llava:train:conversation_58k:000000033471",
                            "llava:train:detail_23k:000000442786", "llava:train:detail_23k:000000539056"]
    for row in rows.values():
        validate(row)
        assert row["variant"] == "" and row["regions"] == []
        assert (row["width"], row["height"]) == IMAGE_SIZES[row["image_id"]]
        assert row["image"]["path"] == f"train2017/{row['image_id']}.jpg"
    # `<image>` after the question (conversation, detail) and before it (complex) both end up in front.
    conversation = rows["llava:train:conversation_58k:000000033471"]["conversations"]
    assert conversation[0]["value"] == "<image>\nWhat are the colors of the bus in the image?"
    assert [t["from"] for t in conversation] == ["human", "gpt"] * 3
    assert conversation[5]["value"].startswith("The bus is driving down the street")
    complex_turns = rows["llava:train:complex_reasoning_77k:000000215677"]["conversations"]
    assert complex_turns[0]["value"] == "<image>\nWhat skill set might someone need to perform such a frisbee trick?"
    detail = rows["llava:train:detail_23k:000000539056"]["conversations"]
    assert "\n\nNear the top left corner" in detail[1]["value"]  # paragraph breaks kept
    assert json.loads(rows["llava:train:detail_23k:000000539056"]["meta"]) == {
        "detections": "absent", "file": "detail_23k", "record_id": "000000539056", "record_index": 1}


def test_ids_and_rows_stable_across_builds(raw_root, tmp_path):
    _write_detections(raw_root, [{"filename": "000000033471.jpg", "pred_bboxes": np.array(
        [[0.1, 0.2, 0.5, 0.9, 0.95]], dtype=np.float32), "labels": np.array([5])}])
    build_source("llava", raw_root, tmp_path / "a", progress=False, options={"class_names": "lvis"})
    build_source("llava", raw_root, tmp_path / "b", progress=False, options={"class_names": "lvis"})
    assert rows_by_id(tmp_path / "a", "train") == rows_by_id(tmp_path / "b", "train")


def test_full_file_is_preferred_to_its_parts(raw_root, tmp_path):
    records = [_record("000000033471", [("human", "<image>\nWhat is this?"), ("gpt", "A bus.")])] * 2
    _replace_file(raw_root, "llava_instruct_150k.json", json.dumps(records))
    report = build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert report.total_rows == 2
    # The same image twice in one file (the 150k file mixes three question types): distinct, stable ids.
    assert sorted(rows_by_id(tmp_path / "out", "train")) == ["llava:train:llava_instruct_150k:000000033471",
                                                   "llava:train:llava_instruct_150k:000000033471:1"]


def test_coco_class_names_match_the_real_categories(realdata):
    instances = json.loads((realdata / "coco" / "coco_mini_2017" / "instances_train2017.json").read_text())
    assert list(COCO_CLASSES) == [c["name"] for c in sorted(instances["categories"], key=lambda c: c["id"])]


# ----- the detection pickle ------------------------------------------------------------------------------
def test_detections_become_regions_and_presence_questions(raw_root, tmp_path):
    boxes = np.array([
        [0.5, 0.5, 0.6, 0.7, 0.50],    # person, kept (second by score)
        [0.1, 0.2, 0.5, 0.9, 0.95],    # bus, kept first
        [0.0, 0.0, 1.0, 1.0, 0.20],    # car, score too low: dropped, but the car counts as detected
        [0.3, 0.3, 0.31, 0.6, 0.90],   # person, 0.01 wide: dropped
        [0.2, 0.2, 0.2, 0.4, 0.80],    # person, zero width: dropped by the filter before its box is checked
    ], dtype=np.float32)
    _write_detections(raw_root, [
        {"filename": "data/coco/train2017/000000033471.jpg", "pred_bboxes": boxes,
         "labels": np.array([0, 5, 2, 0, 0], dtype=np.int64)},
        {"filename": "000000442786.jpg", "pred_bboxes": np.zeros((1, 5), dtype=np.float32), "labels": np.array([0])},
    ])
    out = tmp_path / "out"
    report = build_source("llava", raw_root, out, progress=False, options={"class_names": "coco"})
    assert report.total_skipped == 0
    assert report.regions["train"] == 2 and report.total_rows == 4
    rows = rows_by_id(out, "train")
    row = rows["llava:train:conversation_58k:000000033471"]
    validate(row)
    assert row["variant"] == "det"
    assert [r["label"] for r in row["regions"]] == ["bus", "person"]
    assert [r["source_id"] for r in row["regions"]] == ["det1", "det0"]
    # normalised xyxy times (640, 480, 640, 480)
    assert row["regions"][0]["bbox"] == pytest.approx([64, 96, 320, 432], abs=1e-3)
    assert row["regions"][1]["bbox"] == pytest.approx([320, 240, 384, 336], abs=1e-3)
    first = row["conversations"][0]["value"]
    assert first.startswith("<image>\n") and "<region1> (bus)" in first and "<region2> (person)" in first
    assert first.endswith("\nWhat are the colors of the bus in the image?")
    turns = row["conversations"]
    assert len(turns) == 6 + 4  # the three real exchanges, then the two presence questions
    meta = json.loads(row["meta"])
    assert meta["scores"] == pytest.approx([0.95, 0.5]) and meta["detections"] == "joined"
    presence = {item["present"]: item["label"] for item in meta["presence"]}
    assert presence[True] in {"bus", "person"}
    assert presence[False] not in {"bus", "person", "car"}  # never a class the detector saw at any score
    for item, question, answer in zip(meta["presence"], turns[6::2], turns[7::2], strict=True):
        assert question["value"] == f"Is there a {item['label']} in the image?"
        assert answer["value"].startswith("Yes" if item["present"] else "No")
    # An image whose detections all fail the filter keeps its plain conversation.
    plain = rows["llava:train:detail_23k:000000442786"]
    assert plain["regions"] == [] and json.loads(plain["meta"])["detections"] == "none_kept"
    assert len(plain["conversations"]) == 2


def test_class_names_option(raw_root, tmp_path):
    _write_detections(raw_root, [{"filename": "000000033471.jpg", "pred_bboxes": np.array(
        [[0.1, 0.2, 0.5, 0.9, 0.95]], dtype=np.float32), "labels": np.array([1])}])
    (raw_root / "names.txt").write_text("aerosol_can\nbaseball_cap\n")
    build_source("llava", raw_root, tmp_path / "out", progress=False, options={"class_names": "names.txt"})
    row = rows_by_id(tmp_path / "out", "train")["llava:train:conversation_58k:000000033471"]
    assert row["regions"][0]["label"] == "baseball_cap" and "<region1> (baseball cap)" in row["conversations"][0]["value"]


def test_pickle_that_would_run_code_is_refused_without_running(raw_root, tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    payload = pickle.dumps([{"filename": "000000033471.jpg", "pred_bboxes": Payload(), "labels": []}])
    _replace_file(raw_root, "llava_150k_bbox_pred_results.pkl", payload)
    out = tmp_path / "out"
    with pytest.raises(SourceFileError, match=r"llava_150k_bbox_pred_results\.pkl.*refused to load global (io|builtins)\.open"):
        build_source("llava", raw_root, out, progress=False)
    assert not marker.exists() and no_output_left(out)
    pickle.loads(payload)  # the same bytes through plain pickle do run: the refusal above was real
    assert marker.exists()


# ----- bad input ---------------------------------------------------------------------------------------------
def test_conversation_without_image_is_a_counted_skip(raw_root, tmp_path):
    _replace_file(raw_root, "conversation_58k.json", json.dumps([
        _record("000000033471", [("human", "What colour is the bus?"), ("gpt", "Red.")]),
        _record("000000033471", [("human", "<image>\nWhat colour is the bus?"), ("gpt", "Red.")]),
    ]))
    report = build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"conversation_without_image": 1}
    assert report.total_rows == 4
    assert report.skip_examples["conversation_without_image"] == [
        "conversation_58k.json record 0: no <image> in the conversation"]


@pytest.mark.parametrize(("turns", "reason"), [
    ([("human", "<image>\nA?"), ("human", "B?")], "conversation_not_alternating"),
    ([("human", "<image>\nA?"), ("gpt", "a"), ("human", "B?")], "conversation_not_alternating"),
    ([("gpt", "Hello."), ("human", "<image>\nA?")], "conversation_not_starting_with_human"),
    ([("human", "A?"), ("gpt", "a"), ("human", "<image>\nB?"), ("gpt", "b")], "conversation_image_misplaced"),
])
def test_malformed_conversations_are_counted_skips(raw_root, tmp_path, turns, reason):
    _replace_file(raw_root, "conversation_58k.json", json.dumps([_record("000000033471", turns)]))
    report = build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {reason: 1} and report.total_rows == 3


def test_missing_key_and_missing_image_are_counted_skips(raw_root, tmp_path):
    _replace_file(raw_root, "conversation_58k.json", json.dumps([
        {"id": "000000033471", "image": "000000033471.jpg"},
        _record("000000999999", [("human", "<image>\nA?"), ("gpt", "a")]),
    ]))
    report = build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {"missing_key": 1, "image_missing": 1}


@pytest.mark.parametrize(("payload", "message"), [
    ('{"id": "000000033471", "conversations": []}', r"conversation_58k\.json.*not a JSON array"),
    ('[{"id": "000000033471", "image": "000000033471.jpg", "conv', r"conversation_58k\.json.*truncated"),
    (b'[{"id": "000000033471", "image": "\xff\xfe.jpg", "conversations": []}]', r"conversation_58k\.json.*UTF-?8"),
], ids=["wrong_top_level_type", "truncated", "invalid_utf8"])
def test_unreadable_files_are_errors_without_output(raw_root, tmp_path, payload, message):
    _replace_file(raw_root, "conversation_58k.json", payload)
    out = tmp_path / "out"
    with pytest.raises(SourceFileError, match=message):
        build_source("llava", raw_root, out, progress=False)
    assert no_output_left(out)


def _one_detection(label: int) -> list[dict]:
    return [{"filename": "000000033471.jpg", "pred_bboxes": np.array([[0.1, 0.2, 0.5, 0.9, 0.95]], dtype=np.float32),
             "labels": np.array([label])}]


def test_gpt4roi_pickle_needs_the_lvis_list(raw_root, tmp_path):
    """GPT4RoI's detector is LVIS's: its pickle without class_names would turn aerosol_can into 'person'."""
    _write_detections(raw_root, _one_detection(0))
    with pytest.raises(SourceFileError, match=r"llava_150k_bbox_pred_results\.pkl: GPT4RoI's detection pickle names "
                                              r"LVIS v1 classes.*class_names=lvis"):
        build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_labels_beyond_the_class_list_are_refused(raw_root, tmp_path):
    _write_detections(raw_root, _one_detection(80))
    with pytest.raises(SourceFileError, match=r"labels go up to 80 but class_names has 80 names.*class_names=lvis"):
        build_source("llava", raw_root, tmp_path / "out", progress=False, options={"class_names": "coco"})


@pytest.mark.parametrize(("label", "name"), [(0, "aerosol_can"), (937, "Sharpie"), (938, "shaver_(electric)"),
                                             (939, "shaving_cream"), (1202, "zucchini")])
def test_shipped_lvis_v1_names(raw_root, tmp_path, label, name):
    """The official LVIS v1 order (ids 1..1203): GPT4RoI's tuple fuses 938 and 939 and shifts the rest by one."""
    names = LVIS_NAMES_FILE.read_text().splitlines()
    assert len(names) == len(set(names)) == 1203
    _write_detections(raw_root, _one_detection(label))
    build_source("llava", raw_root, tmp_path / "out", progress=False, options={"class_names": "lvis"})
    row = rows_by_id(tmp_path / "out", "train")["llava:train:conversation_58k:000000033471"]
    assert row["regions"][0]["label"] == name


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data: only the header is ever read)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + header
    end = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk)) + end


@pytest.mark.parametrize(("size", "reason"), [((100_000, 100_000), "image_too_large"),
                                              ((2 ** 31 - 1, 1), "image_too_large"),
                                              ((150_000, 10), "bad_image_size")])
def test_decompression_bomb_and_huge_sizes_are_counted_skips(raw_root, tmp_path, size, reason):
    (raw_root / "train2017" / "000000033471.jpg").write_bytes(_png_header(*size))
    report = build_source("llava", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["train"]) == {reason: 1} and report.total_rows == 3


@pytest.mark.parametrize("labels", [np.array([3.7]), np.array([np.nan]), ["3"], [True]])
def test_labels_must_be_integers(raw_root, tmp_path, labels):
    entry = _one_detection(0)[0]
    entry["labels"] = labels
    _write_detections(raw_root, [entry])
    report = build_source("llava", raw_root, tmp_path / "out", progress=False, options={"class_names": "lvis"})
    assert dict(report.skipped["train"]) == {"bad_detection_entry": 1} and report.total_rows == 3
