"""The VCR builder on the real val record + metadata, its variants, the multiple-choice prompt, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from corpus_rows import no_output_left, rows_by_id

from builders.build import build_source, make_builder
from builders.errors import BuildRejected, SourceFileError, StrictModeError
from builders.readers import vcr_text
from builders.schema import validate

pytestmark = pytest.mark.usefixtures("records_only_builds")

FRAME = ("lsmdc_1054_Harry_Potter_and_the_prisoner_of_azkaban/"
         "1054_Harry_Potter_and_the_prisoner_of_azkaban_00.01.46.736-00.01.50.168@0")
# The real metadata's boxes 0, 2, 3 and 5 (xyxy + score), copied from the file for the named-record checks.
BOX0 = [955.7418212890625, 52.329559326171875, 1551.5677490234375, 789.0325927734375]
BOX2 = [902.0066528320312, 111.65625, 1035.2879638671875, 701.32861328125]
BOX3 = [1403.113037109375, 282.20465087890625, 1542.410888671875, 557.3927612304688]
BOX5 = [366.7726745605469, 0.0, 487.1645812988281, 79.29119873046875]

QA_PROMPT = (
    "<image>\n<region1>,<region2>,<region3>,<region4>,<region5>,<region6> refers to specific areas within the photo "
    "along with their respective identifiers. I need you to answer the question. Questions are multiple-choice; "
    "you only need to pick the correct answer from the given options (A), (B), (C), or (D).\n"
    "Does 1 live in this house ?\n"
    "(A),No , 1 lives nowhere close .\n"
    "(B),Yes , 1 works there .\n"
    "(C),No , 1 is a visitor .\n"
    "(D),No 2 does not belong here ."
)
QAR_PROMPT = (
    "<image>\n<region1>,<region2>,<region3>,<region4>,<region5>,<region6> refers to specific areas within the photo "
    "along with their respective identifiers. I give you a question and its answer, I need you to provide a "
    "rationale explaining why the answer is right. Both questions are multiple-choice; you only need to pick the "
    "correct answer from the given options (A), (B), (C), or (D).\n"
    "\"Does 1 live in this house ?\" The answer is \"No , 1 is a visitor .\". What's the rationale for this decision?\n"
    "(A),1 is nicely dressed with a tie . people dress up when they visit someone else .\n"
    "(B),3 sits comfortably in a chair , reading papers , while it seems 1 has just arrived and is settling in .\n"
    "(C),2 is wearing a coat and muff and is sitting as if a visitor .\n"
    "(D),1 is wearing outerwear , holding an umbrella , and there is a car outside ."
)


@pytest.fixture(scope="module")
def vcr_build(realdata, tmp_path_factory):
    out = tmp_path_factory.mktemp("vcr") / "built"
    report = build_source("vcr", realdata / "vcr", out, progress=False, options={"check_images": False})
    return out, report


@pytest.fixture
def real_record(realdata) -> dict:
    return json.loads((realdata / "vcr" / "val.jsonl").read_text())


@pytest.fixture
def raw_root(realdata, tmp_path) -> Path:
    """A writable VCR root holding the real frame metadata; tests write their own ``val.jsonl``."""
    root = tmp_path / "vcr"
    target = root / "vcr1images" / f"{FRAME}.json"
    target.parent.mkdir(parents=True)
    shutil.copy(realdata / "vcr" / "vcr1images" / f"{FRAME}.json", target)
    return root


def _write_jsonl(root: Path, records: list[dict], name: str = "val.jsonl") -> Path:
    path = root / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ----- the real sample -------------------------------------------------------------------------------------
def test_real_sample_counts(vcr_build):
    out, report = vcr_build
    # One question whose question, answer and rationale all refer to object 0 only: `all`, `single`, `qa`,
    # `qar` rows; no `multi` row (one object asked about).
    assert report.written == {"validation": {"region_reasoning": 2, "vcr_qa": 1, "vcr_qar": 1}}
    assert report.regions["validation"] == 6 + 1 + 6 + 6
    assert report.total_skipped == 0
    saved = json.loads((out / "build_report.json").read_text())
    assert saved["inputs"][0]["path"].endswith("val.jsonl") and len(saved["inputs"]) == 1


def test_round_trip_validates_and_ids(vcr_build):
    out, _ = vcr_build
    rows = rows_by_id(out, "validation")
    assert sorted(rows) == ["vcr:validation:val-1:all", "vcr:validation:val-1:qa", "vcr:validation:val-1:qar",
                            "vcr:validation:val-1:single"]
    for row in rows.values():
        validate(row)
        assert row["image"]["path"] == f"vcr1images/{FRAME}.jpg"
        assert (row["width"], row["height"]) == (1920, 797)
        assert row["variant"] == row["id"].rsplit(":", 1)[1]


def test_boxes_labels_scores_and_polygons_of_named_objects(vcr_build):
    rows = rows_by_id(vcr_build[0], "validation")
    regions = rows["vcr:validation:val-1:all"]["regions"]
    assert [r["label"] for r in regions] == ["person", "person", "person", "car", "cellphone", "clock"]
    assert [r["source_id"] for r in regions] == ["0", "1", "2", "3", "4", "5"]
    assert regions[0]["bbox"] == pytest.approx(BOX0, abs=1e-3)  # metadata boxes are already xyxy pixels
    assert regions[5]["bbox"] == pytest.approx(BOX5, abs=1e-3)
    polygon = json.loads(regions[0]["segmentation"])
    assert len(polygon) == 1 and polygon[0][:6] == [1133, 64, 1126, 66, 1115, 69]  # [[x, y], ...] -> COCO flat
    meta = json.loads(rows["vcr:validation:val-1:all"]["meta"])
    assert meta["scores"][0] == pytest.approx(0.9993261098861694) and meta["scores"][3] == pytest.approx(0.75174337)
    assert (meta["annot_id"], meta["img_id"], meta["answer_label"], meta["rationale_label"]) == ("val-1", "val-0", 2, 3)
    single = rows["vcr:validation:val-1:single"]
    assert len(single["regions"]) == 1 and single["regions"][0]["bbox"] == pytest.approx(BOX0, abs=1e-3)


def test_multiple_choice_rows_reproduce_the_protocol_prompt(vcr_build):
    rows = rows_by_id(vcr_build[0], "validation")
    qa, qar = rows["vcr:validation:val-1:qa"], rows["vcr:validation:val-1:qar"]
    assert qa["task"] == "vcr_qa" and qar["task"] == "vcr_qar"
    assert [t["value"] for t in qa["conversations"]] == [QA_PROMPT, "(C)"]
    assert [t["value"] for t in qar["conversations"]] == [QAR_PROMPT, "(D)"]
    assert qa["label"] == 2 and qa["choices"][2] == "No , 1 is a visitor ."
    assert qar["label"] == 3 and qar["choices"][3].startswith("1 is wearing outerwear")
    assert len(qa["regions"]) == len(qar["regions"]) == 6


def test_reasoning_rows_render_references(vcr_build):
    rows = rows_by_id(vcr_build[0], "validation")
    everything = [t["value"] for t in rows["vcr:validation:val-1:all"]["conversations"]]
    assert everything[0].startswith("<image>\n") and everything[0].endswith(" Does <region1> live in this house?")
    assert all(f"<region{k}>" in everything[0] for k in range(1, 7))
    assert everything[1] == "No, person at region1 is a visitor."
    assert everything[3] == "Person at region1 is wearing outerwear, holding an umbrella, and there is a car outside."
    single = [t["value"] for t in rows["vcr:validation:val-1:single"]["conversations"]]
    assert single[0] == "<image>\nDoes <region1> live in this house?"
    assert single[1] == everything[1] and single[3] == everything[3] and len(single) == 4


def test_ids_and_rows_stable_across_builds(realdata, vcr_build, tmp_path):
    second = tmp_path / "again"
    build_source("vcr", realdata / "vcr", second, progress=False)
    assert rows_by_id(second, "validation") == rows_by_id(vcr_build[0], "validation")


# ----- variants on records derived from the real one ----------------------------------------------------
def test_class_is_looked_up_with_the_zero_based_index(raw_root, real_record, tmp_path):
    # Ask about the car (object 3). GPT4RoI's all-objects variant would name objects[4] ("cellphone").
    record = {**real_record, "question": ["Whose", "is", [3], "?"],
              "answer_choices": [["It", "belongs", "to", [1], "."]] * 2 + [[[3], "is", "stolen", "."]] * 2,
              "answer_label": 2}
    _write_jsonl(raw_root, [record])
    out = tmp_path / "out"
    build_source("vcr", raw_root, out, progress=False, options={"variants": ["all", "single"]})
    rows = rows_by_id(out, "validation")
    assert rows["vcr:validation:val-1:all"]["conversations"][1]["value"] == "Car at region4 is stolen."
    assert rows["vcr:validation:val-1:all"]["conversations"][0]["value"].endswith("Whose is <region4>?")
    single = rows["vcr:validation:val-1:single"]
    assert single["conversations"][1]["value"] == "Car at region1 is stolen."
    assert single["regions"][0]["label"] == "car" and single["regions"][0]["bbox"] == pytest.approx(BOX3, abs=1e-3)
    # The real rationale refers to object 0, which the question does not: the why-turn is dropped.
    assert len(single["conversations"]) == 2 and json.loads(single["meta"])["with_rationale"] is False


def test_multi_variant_numbers_question_objects_in_order(raw_root, real_record, tmp_path):
    record = {**real_record, "question": ["Is", [2], "waiting", "for", [0, 2], "?"]}
    unrelated = {**real_record, "annot_id": "val-2", "question": ["Is", [2], "waiting", "for", [1], "?"]}
    _write_jsonl(raw_root, [record, unrelated])
    out = tmp_path / "out"
    report = build_source("vcr", raw_root, out, progress=False, options={"variants": ["single", "multi"]})
    rows = rows_by_id(out, "validation")
    # val-2's answer refers to object 0, which its question does not: no single/multi row, and no skip.
    assert sorted(rows) == ["vcr:validation:val-1:multi"] and report.total_skipped == 0
    row = rows["vcr:validation:val-1:multi"]
    validate(row)
    assert [r["bbox"] for r in row["regions"]] == [pytest.approx(BOX2, abs=1e-3), pytest.approx(BOX0, abs=1e-3)]
    assert json.loads(row["meta"])["object_indices"] == [2, 0]
    turns = [t["value"] for t in row["conversations"]]
    assert turns[0] == "<image>\nIs <region1> waiting for <region2> and <region1>?"
    assert turns[1] == "No, person at region2 is a visitor."
    assert turns[3].startswith("Person at region2 is wearing outerwear")


def test_variants_and_segmentation_options(realdata, tmp_path):
    out = tmp_path / "out"
    report = build_source("vcr", realdata / "vcr", out, progress=False,
                          options={"variants": ["qa"], "segmentation": False})
    assert report.written == {"validation": {"vcr_qa": 1}}
    assert [r["segmentation"] for r in rows_by_id(out, "validation")["vcr:validation:val-1:qa"]["regions"]] == [""] * 6
    with pytest.raises(ValueError, match="unknown or no variants"):
        make_builder("vcr", realdata / "vcr", options={"variants": ["qa", "everything"]})


def test_cli_with_a_list_option(realdata, tmp_path):
    out = tmp_path / "cli"
    command = [sys.executable, "-m", "gpt4roi.cli", "build", "source=vcr", f"raw_root={realdata / 'vcr'}",
               f"out={out}", "source.options.variants=[qa,qar]", "source.options.check_images=false"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((out / "build_report.json").read_text())
    assert saved["options"]["variants"] == ["qa", "qar"]
    assert saved["rows_written"] == {"validation": {"vcr_qa": 1, "vcr_qar": 1}}


def test_text_helpers():
    assert vcr_text.numbers([2, 1, 0]) == "3,2,1"
    tokens = ["Why", "is", [0, 1], "n't", "at", [2], "'s", "desk", "(", "now", ")", "?"]
    assert vcr_text.protocol_text(tokens) == "Why is 1,2 n't at 3 's desk ( now ) ?"
    assert vcr_text.natural_text(tokens, lambda ref: "+".join(map(str, ref))) == "Why is 0+1n't at 2's desk (now)?"
    assert vcr_text.object_indices(tokens) == [0, 1, 2]
    assert [vcr_text.parse_letter(t) for t in ("(C)", "The answer is (B).", "D", "A.", "A man", "")] == [2, 1, 3, 0, -1, -1]


# ----- bad input ---------------------------------------------------------------------------------------------
def test_reference_to_a_missing_object_is_a_counted_skip(raw_root, real_record, tmp_path):
    broken = {**real_record, "annot_id": "val-2", "question": ["Does", [9], "live", "here", "?"]}
    _write_jsonl(raw_root, [real_record, broken])
    out = tmp_path / "out"
    report = build_source("vcr", raw_root, out, progress=False)
    assert dict(report.skipped["validation"]) == {"vcr_missing_object": 1}
    assert report.total_rows == 4 and all(":val-1:" in i for i in rows_by_id(out, "validation"))
    assert "object(s) [9]" in report.skip_examples["vcr_missing_object"][0]
    strict_out = tmp_path / "strict"
    with pytest.raises(StrictModeError, match="vcr_missing_object"):
        build_source("vcr", raw_root, strict_out, progress=False, strict=True)
    assert no_output_left(strict_out)


def test_malformed_tokens_are_counted_skips(raw_root, real_record, tmp_path):
    bad = [{**real_record, "annot_id": f"val-{k}", "question": question}
           for k, question in enumerate([["Does", [], "live"], ["Does", 3, "live"], "Does 1 live?"], start=2)]
    _write_jsonl(raw_root, [real_record, *bad])
    report = build_source("vcr", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["validation"]) == {"vcr_bad_tokens": 3} and report.total_rows == 4


def test_objects_disagreeing_with_metadata_are_counted_skips(raw_root, real_record, tmp_path):
    extra = {**real_record, "objects": [*real_record["objects"], "dog"]}  # 7 objects, 6 boxes
    empty = {**real_record, "annot_id": "val-2", "objects": []}
    _write_jsonl(raw_root, [extra, empty])
    report = build_source("vcr", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["validation"]) == {"vcr_metadata_mismatch": 1, "vcr_no_objects": 1}
    assert report.total_rows == 0


def test_truncated_jsonl_line_names_file_and_line(raw_root, real_record, tmp_path):
    path = _write_jsonl(raw_root, [real_record])
    path.write_text(path.read_text() + json.dumps(real_record)[:200] + "\n")
    out = tmp_path / "out"
    with pytest.raises(SourceFileError, match=r"val\.jsonl at line 2: invalid JSON"):
        build_source("vcr", raw_root, out, progress=False)
    assert no_output_left(out)


def test_invalid_utf8_line_is_an_error(raw_root, real_record, tmp_path):
    path = raw_root / "val.jsonl"
    path.write_bytes(json.dumps(real_record).encode().replace(b"visitor", b"visit\xff\xfeor") + b"\n")
    out = tmp_path / "out"
    with pytest.raises(SourceFileError, match=r"val\.jsonl at line 1"):
        build_source("vcr", raw_root, out, progress=False)
    assert no_output_left(out)


def test_unreadable_metadata_skips_only_its_records(raw_root, real_record, tmp_path):
    (raw_root / "vcr1images" / f"{FRAME}.json").write_text('{"boxes": [[1, 2, 3')
    _write_jsonl(raw_root, [real_record])
    report = build_source("vcr", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["validation"]) == {"vcr_metadata_unreadable": 1}
    assert f"{FRAME}.json" in report.skip_examples["vcr_metadata_unreadable"][0]


def test_test_split_is_not_built_and_unlabelled_records_are_counted(raw_root, real_record, tmp_path):
    """test.jsonl hides its labels: no row can come of it, so it is no split (a build of every split must not
    fail on it); an unlabelled record elsewhere is a counted skip."""
    unlabelled = {k: v for k, v in real_record.items() if k not in ("answer_label", "rationale_label")}
    _write_jsonl(raw_root, [unlabelled], name="test.jsonl")
    _write_jsonl(raw_root, [real_record, unlabelled])
    report = build_source("vcr", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped) == {"validation": {"unlabelled_item": 1}} and report.total_rows == 4
    with pytest.raises(ValueError, match=r"split\(s\) \['test'\] not available"):
        build_source("vcr", raw_root, tmp_path / "test", splits=["test"], progress=False)


def test_empty_split_file_fails_the_build(raw_root, tmp_path):
    """An empty val.jsonl (a failed download) held no record: the build stops instead of writing nothing."""
    _write_jsonl(raw_root, [])
    with pytest.raises(BuildRejected, match=r"vcr/validation kept no rows; skips by reason: none"):
        build_source("vcr", raw_root, tmp_path / "out", progress=False, options={"max_skip_share": 1.0})
    assert not (tmp_path / "out").exists()


def test_degenerate_box_skips_only_the_variants_that_use_it(raw_root, real_record, tmp_path):
    meta_path = raw_root / "vcr1images" / f"{FRAME}.json"
    metadata = json.loads(meta_path.read_text())
    metadata["boxes"][5] = [400.0, 10.0, 400.0, 20.0, 0.9]  # zero width: the clock, which the question ignores
    meta_path.write_text(json.dumps(metadata))
    _write_jsonl(raw_root, [real_record])
    report = build_source("vcr", raw_root, tmp_path / "out", progress=False)
    assert dict(report.skipped["validation"]) == {"bad_box_degenerate": 3}  # all, qa, qar
    assert report.written == {"validation": {"region_reasoning": 1}}  # single survives
