"""Box conventions, placeholders, seeding, safe pickles, path resolution, JSON reading, atomic output."""

from __future__ import annotations

import json
import math
import pickle

import pytest
from conftest import CodeRunningPickle

from builders.boxes import (
    box_iou,
    checked_box,
    normalized_to_xyxy,
    union_box,
    voc_to_xyxy,
    xywh_to_xyxy,
    xyxy_to_normalized,
)
from builders.errors import SkipRecord, SourceFileError
from builders.placeholders import region_refs, with_image_prefix
from builders.readers.jsonio import iter_json_array, iter_jsonl, read_json, read_text
from builders.readers.paths import relative_image_path, resolve_under
from builders.readers.safe_pickle import safe_load_pickle
from builders.seeding import row_rng
from builders.storage.output import ShardedParquetWriter, atomic_directory


def test_box_conventions_on_real_records():
    # Visual Genome region 1382 of image 1: x=421, y=57, width=82, height=139
    # (docs/formats.md#visual-genome-release-files).
    assert xywh_to_xyxy([421, 57, 82, 139]) == [421, 57, 503, 196]
    # Flickr30K VOC boxes are 1-based inclusive: pixel columns 159..219 -> [158, 219).
    assert voc_to_xyxy([159, 125, 219, 335]) == [158, 124, 219, 335]
    box = normalized_to_xyxy([0.1, 0.2, 0.5, 1.0], 640, 480)
    assert box == pytest.approx([64, 96, 320, 480])
    assert xyxy_to_normalized(box, 640, 480) == pytest.approx([0.1, 0.2, 0.5, 1.0])
    assert union_box([[0, 0, 2, 2], [1, 1, 5, 3]]) == [0, 0, 5, 3]
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)


def test_checked_box_clips_and_skips():
    assert checked_box([-5, -1, 700, 20], 640, 480) == [0, 0, 640, 20]
    for bad, reason in [([0, 0, 0.5, 10], "bad_box_degenerate"), ([10, 10, 5, 20], "bad_box_degenerate"),
                        ([700, 500, 800, 600], "bad_box_outside_image"), ([0, 0, math.nan, 4], "bad_box_nonfinite"),
                        ([1, 2], "bad_box_format"), (["a", 0, 1, 1], "bad_box_format")]:
        with pytest.raises(SkipRecord) as info:
            checked_box(bad, 640, 480)
        assert info.value.reason == reason


def test_placeholders():
    assert region_refs("<region2> left of <region10> and <region2>") == [2, 10, 2]
    assert with_image_prefix("What is this?\n<image>") == "<image>\nWhat is this?"
    assert with_image_prefix("<image>\nWhat is this?") == "<image>\nWhat is this?"


def test_row_rng_depends_only_on_seed_and_key():
    draws = [row_rng(0, "coco:train:1").random() for _ in range(2)]
    assert draws[0] == draws[1]
    assert row_rng(1, "coco:train:1").random() != draws[0]
    assert row_rng(0, "coco:train:2").random() != draws[0]


def test_safe_pickle_refuses_code_and_admits_plain_data(tmp_path):
    plain = tmp_path / "refs(unc).p"
    plain.write_bytes(pickle.dumps([{"ref_id": 0, "sentences": [{"sent": "the lady"}], "box": (1.0, 2)}]))
    assert safe_load_pickle(plain)[0]["sentences"][0]["sent"] == "the lady"

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps([CodeRunningPickle(marker)]))
    with pytest.raises(SourceFileError, match="refused to load global") as info:
        safe_load_pickle(evil)
    assert str(evil) in str(info.value)
    assert not marker.exists()


def test_resolve_under_refuses_lexical_escapes_and_follows_user_symlinks(tmp_path):
    (tmp_path / "images").mkdir()
    assert relative_image_path("images/a.jpg") == "images/a.jpg"
    assert relative_image_path("./images//a.jpg") == "images/a.jpg"
    for bad in ("../outside.jpg", "/etc/passwd", "images/../../x.jpg", "", ".", "a\x00b"):
        with pytest.raises(SkipRecord) as info:
            resolve_under(tmp_path, bad)
        assert info.value.reason == "unsafe_image_path"
    # A link the user made inside the raw root (GPT4RoI's README: "soft link them to this directory") is
    # part of their layout and is followed; only the annotation's text is checked.
    outside = tmp_path.parent / "outside_target"
    outside.mkdir(exist_ok=True)
    (outside / "a.jpg").write_bytes(b"jpg")
    (tmp_path / "link").symlink_to(outside)
    assert resolve_under(tmp_path, "link/a.jpg").read_bytes() == b"jpg"


def test_read_json_errors_name_file_and_position(tmp_path):
    truncated = tmp_path / "instances.json"
    truncated.write_text('{"images": [{"id": 1}, ')
    with pytest.raises(SourceFileError, match=r"instances\.json at byte \d+: invalid JSON"):
        read_json(truncated)
    wrong = tmp_path / "list.json"
    wrong.write_text("[1, 2]")
    with pytest.raises(SourceFileError, match="expected a JSON object"):
        read_json(wrong, expect=dict)
    with pytest.raises(SourceFileError, match="file not found"):
        read_json(tmp_path / "missing.json")


def test_streaming_reader_errors(tmp_path):
    good = tmp_path / "regions.json"
    good.write_text(json.dumps([{"id": 1}, {"id": 2}]))
    assert [item["id"] for item in iter_json_array(good)] == [1, 2]
    truncated = tmp_path / "truncated.json"
    truncated.write_text('[{"id": 1}, {"id": 2')
    with pytest.raises(SourceFileError, match="at record 2: invalid or truncated"):
        list(iter_json_array(truncated))
    not_array = tmp_path / "object.json"
    not_array.write_text('{"id": 1}')
    with pytest.raises(SourceFileError, match="not a JSON array"):
        list(iter_json_array(not_array))
    lines = tmp_path / "val.jsonl"
    lines.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(SourceFileError, match="line 3"):
        list(iter_jsonl(lines))


def test_invalid_utf8_is_named(tmp_path):
    bad = tmp_path / "Sentences.txt"
    bad.write_bytes(b"a man \xff\xfe in a hat\n")
    with pytest.raises(SourceFileError, match=r"Sentences\.txt at byte 6: invalid UTF-8"):
        read_text(bad)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "partial.txt").write_text("half")
            raise RuntimeError("killed")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_directory(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]


def test_sharded_writer_names_shards_hub_style(tmp_path, schema_row):
    import datasets

    writer = ShardedParquetWriter(tmp_path / "data", "train", max_shard_bytes=1)
    rows = []
    for k in range(3):
        row = dict(schema_row)
        row["id"] = f"coco:train:{k}"
        rows.append(row)
    for row in rows:  # one row per flush so that every flush opens a new shard
        writer.write(row)
        writer._flush()
    paths = writer.close()
    assert [p.name for p in paths] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    loaded = datasets.load_dataset(str(tmp_path), split="train")
    assert sorted(loaded["id"]) == [row["id"] for row in rows]
    assert loaded.features["image"].decode is False


def test_writer_encoding_matches_datasets_encode_example(tmp_path, schema_row):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from builders.schema import FEATURES

    png = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(png, format="PNG")
    images = ["train2017/a.jpg", {"path": "b.jpg", "bytes": None}, Image.open(io.BytesIO(png.getvalue()))]
    rows = []
    for k, image in enumerate(images):
        row = dict(schema_row, id=f"coco:train:{k}", image=image)
        rows.append(row)
    writer = ShardedParquetWriter(tmp_path / "data", "train")
    writer.write_all(rows)
    (path,) = writer.close()
    expected = pa.Table.from_pylist([FEATURES.encode_example(row) for row in rows], schema=FEATURES.arrow_schema)
    assert pq.read_table(path).equals(expected)
