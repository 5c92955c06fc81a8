"""The Flickr30K Entities builder: real Sentences and split files, XML written here, MDETR layout, bad input.

No real ``Annotations/*.xml`` is available (docs/formats.md#real-samples), so :func:`write_xml` writes one
per real Sentences file in the layout of docs/formats.md#flickr30k-annotation-xml, with the chain ids of the
real captions: boxes for the people, clothing and objects, a chain with two boxes (253081, "full football
gear"), one box shared by two chains (253072 / 253077, the ball), ``<nobndbox>`` scene chains, and chains
absent from the XML (221800 "behind").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
from corpus_rows import rows_by_id

from builders.build import build_source
from builders.errors import BuildRejected, SourceFileError, StrictModeError
from builders.placeholders import region_refs
from builders.readers.flickr_entities import parse_caption
from builders.schema import validate

GIRL, MATCH = "4945942737", "6338542128"
SIZES = {GIRL: (500, 375), MATCH: (500, 333)}
# chain id(s) -> box (xmin, ymin, xmax, ymax; 1-based inclusive) or None for <nobndbox>
OBJECTS = {
    GIRL: [
        (["221796"], (180, 120, 320, 370)),   # the girl / woman
        (["221804"], (230, 120, 290, 180)),   # brown hair
        (["221797"], (190, 180, 310, 360)),   # black dress
        (["221798"], (1, 1, 500, 200)),       # the water
        (["221799"], None),                   # the edge / concrete / ledge: no box
    ],
    MATCH: [
        (["253080"], None),                   # a sunny, dry day
        (["253081"], (60, 40, 200, 300)),     # full football gear: two boxes
        (["253081"], (250, 30, 420, 310)),
        (["253069"], (240, 20, 430, 320)),    # the Texas A&M player
        (["253070"], (50, 30, 210, 320)),     # the Iowa State player
        (["253072", "253077"], (190, 100, 230, 140)),  # the football, one box for two chains
        (["253078"], None),
        (["253071"], None),
        (["253068"], (245, 25, 425, 315)),
        (["253073"], (120, 120, 150, 160)),
        (["253083"], (150, 100, 240, 180)),
    ],
}


def xml_text(image_id: str, objects=None, size=None) -> str:
    width, height = size or SIZES[image_id]
    parts = [f"<annotation><filename>{image_id}.jpg</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for chains, box in objects if objects is not None else OBJECTS[image_id]:
        names = "".join(f"<name>{chain}</name>" for chain in chains)
        if box is None:
            parts.append(f"<object>{names}<scene>1</scene><nobndbox>1</nobndbox></object>")
        else:
            coords = "".join(f"<{tag}>{value}</{tag}>" for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=False))
            parts.append(f"<object>{names}<bndbox>{coords}</bndbox></object>")
    return "".join(parts) + "</annotation>\n"


@pytest.fixture
def flickr_root(realdata, tmp_path) -> Path:
    """A raw root: the real Sentences, split files and UNRELATED_CAPTIONS, plus the XML written here."""
    root = tmp_path / "flickr30k"
    shutil.copytree(realdata / "flickr30k_entities", root)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (root / "Annotations").mkdir()
    (root / "flickr30k-images").mkdir()
    for image_id in (GIRL, MATCH):
        (root / "Annotations" / f"{image_id}.xml").write_text(xml_text(image_id))
        (root / "flickr30k-images" / f"{image_id}.jpg").touch()  # existence is checked, never decoded
    return root


def build(root: Path, out: Path, splits=("train",), **options):
    """The real split files list 31,783 ids of which the sample holds 2, both in train: skips are the norm
    here, and the validation and test splits keep no rows (which fails their build, see below)."""
    return build_source("flickr30k", root, out, splits=list(splits), options={"max_skip_share": 1.0, **options},
                        progress=False)


def test_parse_caption_real_line(realdata):
    line = (realdata / "flickr30k_entities/Sentences" / f"{MATCH}.txt").read_text().splitlines()[1]
    caption = parse_caption(line)
    assert caption.sentence == ("An offensive player running with a football while a football player tries to stop "
                                "him during a football game .")
    assert [(p.chain_id, p.text, p.first_word_index) for p in caption.phrases] == [
        ("253070", "An offensive player", 0), ("253077", "a football", 5), ("253069", "a football player", 8),
        ("0", "him", 14), ("253071", "a football game", 16)]
    for phrase in caption.phrases:
        assert caption.sentence[phrase.start:phrase.end] == phrase.text
    assert [p.visual for p in caption.phrases] == [True, True, True, False, True]
    assert parse_caption("[/EN#255545/bodyparts/people a man 's arm] .").phrases[0].types == ("bodyparts", "people")


def test_real_sentences_merged(flickr_root, tmp_path):
    out = tmp_path / "out"
    report = build(flickr_root, out)
    assert report.written == {"train": {"multi_region_caption": 10}}
    # regions per caption, merged: girl 3+3+3+2+2, match 4+3+2+3+3
    assert report.regions["train"] == 28
    # the real split files list 29,783 / 1,000 / 1,000 ids; only the two sample images have files here.
    # UNRELATED_CAPTIONS names 21 captions, none of these two images.
    assert dict(report.skipped) == {"train": {"missing_sentences_file": 29781}}

    rows = rows_by_id(out, "train")
    assert sorted(rows) == sorted(f"flickr30k:train:{i}:{k}" for i in (GIRL, MATCH) for k in range(5))
    for row in rows.values():
        validate(row)
        assert row["variant"] == "merged" and row["image"]["path"] == f"flickr30k-images/{row['image_id']}.jpg"
        turns = row["conversations"]
        n = len(row["regions"])
        assert region_refs(turns[0]["value"]) == list(range(1, n + 1))  # turn 1 covers every region
        assert "[" not in turns[1]["value"] and "/EN#" not in turns[1]["value"]
        assert [region_refs(t["value"]) for t in turns[2::2]] == [[k] for k in range(1, n + 1)]
        assert [t["value"] for t in turns[3::2]] == [r["label"] for r in row["regions"]]

    first = rows[f"flickr30k:train:{MATCH}:0"]
    assert first["conversations"][1]["value"] == ("On a sunny , dry day , wearing full football gear , a Texas A&M "
                                                  "football player tries to reach an Iowa State football player , "
                                                  "for the football during the game .")
    assert [r["label"] for r in first["regions"]] == [
        "full football gear", "a Texas A&M football player", "an Iowa State football player", "the football"]
    # two gear boxes (60,40,200,300) and (250,30,420,310), 1-based inclusive -> union [59, 29, 420, 310]
    assert first["regions"][0]["bbox"] == [59.0, 29.0, 420.0, 310.0]
    assert first["regions"][1]["bbox"] == [239.0, 19.0, 430.0, 320.0]
    # "A football player ... a player": one chain mentioned twice is one region, answered by its first mention
    third = rows[f"flickr30k:train:{MATCH}:2"]
    assert [r["source_id"] for r in third["regions"]] == ["253069", "253072"]
    assert third["regions"][0]["label"] == "A football player"
    # a chain typed 'scene' that has a box is a region; 'notvisual' him is not
    fourth = rows[f"flickr30k:train:{MATCH}:3"]
    assert [r["source_id"] for r in fourth["regions"]] == ["253070", "253068", "253072"]
    girl = rows[f"flickr30k:train:{GIRL}:1"]  # 'behind' has no XML object, 'black' does
    assert [r["label"] for r in girl["regions"]] == ["A woman", "black", "a body of water"]
    assert girl["width"] == 500 and girl["height"] == 375


def test_separate_boxes_share_one_turn(flickr_root, tmp_path):
    out = tmp_path / "out"
    report = build(flickr_root, out, boxes="separate")
    assert report.regions["train"] == 29  # the gear chain keeps its two boxes
    row = rows_by_id(out, "train")[f"flickr30k:train:{MATCH}:0"]
    validate(row)
    assert row["variant"] == "separate"
    assert [r["bbox"] for r in row["regions"][:2]] == [[59.0, 39.0, 200.0, 300.0], [249.0, 29.0, 420.0, 310.0]]
    assert region_refs(row["conversations"][2]["value"]) == [1, 2]  # one question about both gear boxes
    assert row["conversations"][3]["value"] == "full football gear"
    assert len(row["conversations"]) == 2 + 2 * 4


def test_ids_stable_and_round_trip(flickr_root, tmp_path):
    build(flickr_root, tmp_path / "a")
    build(flickr_root, tmp_path / "b")
    first = datasets.load_dataset(str(tmp_path / "a"), split="train").to_list()
    assert first == datasets.load_dataset(str(tmp_path / "b"), split="train").to_list()
    assert len(first) == 10


def mdetr_entry(image_id: str, sentence_id: int, caption: str, entry_id: int, width: int, height: int) -> dict:
    return {"file_name": f"{image_id}.jpg", "height": str(height), "width": str(width), "id": entry_id,
            "caption": caption, "dataset_name": "flickr", "tokens_negative": [[0, len(caption)]],
            "sentence_id": sentence_id, "original_img_id": int(image_id), "tokens_positive_eval": []}


def mdetr_ann(ann_id: int, entry_id: int, caption: str, phrases: list[str], voc: tuple) -> dict:
    """An MDETR annotation: 1-based xmin/ymin kept, w = xmax - xmin (flickr_combined.py)."""
    xmin, ymin, xmax, ymax = voc
    spans = [[caption.index(p), caption.index(p) + len(p)] for p in phrases]
    return {"area": (xmax - xmin) * (ymax - ymin), "iscrowd": 0, "image_id": entry_id, "category_id": 1,
            "id": ann_id, "bbox": [xmin, ymin, xmax - xmin, ymax - ymin], "tokens_positive": spans}


def test_mdetr_layout_matches_entities(flickr_root, tmp_path):
    """MDETR's mergedGT entry for caption 0 of the match image gives the same regions as the XML."""
    caption = ("On a sunny , dry day , wearing full football gear , a Texas A&M football player tries to reach "
               "an Iowa State football player , for the football during the game .")
    root = tmp_path / "mdetr"
    (root / "mdetr_annotations").mkdir(parents=True)  # where MDETR's download (and GPT4RoI's README) puts it
    (root / "flickr30k-images").mkdir()
    (root / "flickr30k-images" / f"{MATCH}.jpg").touch()
    anns = [mdetr_ann(10, 7, caption, ["full football gear"], (60, 30, 420, 310)),
            mdetr_ann(11, 7, caption, ["a Texas A&M football player"], (240, 20, 430, 320)),
            mdetr_ann(12, 7, caption, ["an Iowa State football player"], (50, 30, 210, 320)),
            mdetr_ann(13, 7, caption, ["the football"], (190, 100, 230, 140))]
    data = {"info": [], "licenses": [], "images": [mdetr_entry(MATCH, 0, caption, 7, 500, 333)],
            "annotations": anns, "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}
    (root / "mdetr_annotations" / "final_flickr_mergedGT_train.json").write_text(json.dumps(data))
    report = build(root, tmp_path / "m")
    assert report.written == {"train": {"multi_region_caption": 1}}
    mdetr_row = rows_by_id(tmp_path / "m", "train")[f"flickr30k:train:{MATCH}:0"]
    build(flickr_root, tmp_path / "e")
    entities_row = rows_by_id(tmp_path / "e", "train")[f"flickr30k:train:{MATCH}:0"]
    validate(mdetr_row)
    assert mdetr_row["width"] == 500 and mdetr_row["height"] == 333  # strings in the file
    assert [(r["bbox"], r["label"]) for r in mdetr_row["regions"]] == \
        [(r["bbox"], r["label"]) for r in entities_row["regions"]]
    assert mdetr_row["conversations"] == entities_row["conversations"]


# ----- bad input ------------------------------------------------------------------------------------------------------
def test_unbalanced_brackets_counted(flickr_root, tmp_path):
    path = flickr_root / "Sentences" / f"{GIRL}.txt"
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("overlooking water]", "overlooking water")
    lines[1] = lines[1].replace("[/EN#221797/clothing black]", "/EN#221797/clothing black]")
    path.write_text("\n".join(lines) + "\n")
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"]["unbalanced_brackets"] == 2
    assert report.written["train"]["multi_region_caption"] == 8
    (flickr_root / "train.txt").write_text(f"{MATCH}\n{GIRL}\n")
    with pytest.raises(StrictModeError, match=f"{GIRL}.txt caption 0.*never closed"):
        build_source("flickr30k", flickr_root, tmp_path / "strict", strict=True, splits=["train"], progress=False)
    assert not (tmp_path / "strict").exists()


def test_malformed_xml_counted_per_image(flickr_root, tmp_path):
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(xml_text(GIRL)[:-30])  # truncated
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"]["malformed_xml"] == 1
    assert report.written["train"]["multi_region_caption"] == 5  # the other image is unaffected
    example = next(e for e in report.skip_examples["malformed_xml"])
    assert f"{GIRL}.xml" in example


@pytest.mark.parametrize(("box", "reason"), [
    ((100, 100, 90, 150), "bad_box_degenerate"),       # xmax < xmin
    ((600, 10, 700, 50), "bad_box_outside_image"),
    (("nan", 10, 50, 50), "bad_box_format"),           # numbers must be decimal numbers
    (("1e999", 10, 50, 50), "bad_box_nonfinite"),
    ((10, 10, 50), "bad_box_format"),                   # <ymax> missing
])
def test_bad_boxes_counted(flickr_root, tmp_path, box, reason):
    objects = [(["221796"], box), *OBJECTS[GIRL][1:]]  # a 3-value box has no <ymax>
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(xml_text(GIRL, objects))
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"][reason] == 1  # counted once per box, not once per caption
    assert report.regions["train"] == 28 - 5  # the girl is in all five captions of her image


def test_one_pixel_box_is_kept(flickr_root, tmp_path):
    """1-based inclusive xmin == xmax is one pixel column wide: [99, 99, 100, 150] in the schema."""
    objects = [(["221796"], (100, 100, 100, 150)), *OBJECTS[GIRL][1:]]
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(xml_text(GIRL, objects))
    report = build(flickr_root, tmp_path / "out")
    assert report.regions["train"] == 28 and "bad_box_degenerate" not in report.skipped["train"]
    assert rows_by_id(tmp_path / "out", "train")[f"flickr30k:train:{GIRL}:0"]["regions"][0]["bbox"] == [99.0, 99.0, 100.0, 150.0]


def test_missing_size_and_unrelated_caption(flickr_root, tmp_path):
    text = xml_text(MATCH).replace("<width>500</width>", "")
    (flickr_root / "Annotations" / f"{MATCH}.xml").write_text(text)
    unrelated = flickr_root / "UNRELATED_CAPTIONS"
    unrelated.write_text(unrelated.read_text() + f"\n{GIRL} 2\n{MATCH}\n")  # the last line names no caption
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"]["bad_image_size"] == 1
    assert report.skipped["train"]["unrelated_caption"] == 1
    assert report.skipped["train"]["unreadable_unrelated_line"] == 1
    assert "validation" not in report.skipped or "unreadable_unrelated_line" not in report.skipped["validation"]
    ids = set(rows_by_id(tmp_path / "out", "train"))
    assert ids == {f"flickr30k:train:{GIRL}:{k}" for k in (0, 2, 3, 4)}


def test_caption_without_regions_and_duplicate_mdetr_caption(flickr_root, tmp_path):
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(xml_text(GIRL, objects=[]))
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"]["no_regions"] == 5

    caption = "A girl sits ."
    root = tmp_path / "mdetr"
    (root / "flickr30k-images").mkdir(parents=True)
    (root / "flickr30k-images" / f"{GIRL}.jpg").touch()
    entries = [mdetr_entry(GIRL, 0, caption, 1, 500, 375), mdetr_entry(GIRL, 0, caption, 2, 500, 375)]
    anns = [mdetr_ann(1, 1, caption, ["A girl"], (1, 1, 50, 50)), mdetr_ann(2, 2, caption, ["A girl"], (1, 1, 50, 50))]
    (root / "final_flickr_mergedGT_val.json").write_text(json.dumps({"images": entries, "annotations": anns}))
    report = build(root, tmp_path / "m", splits=("validation",))
    assert report.written == {"validation": {"multi_region_caption": 1}}
    assert report.skipped["validation"]["duplicate_id"] == 1
    row = datasets.load_dataset(str(tmp_path / "m"), split="validation")[0]
    assert row["references"] == [caption] and row["regions"][0]["bbox"] == [0.0, 0.0, 50.0, 50.0]


def test_bad_split_file_is_an_error(flickr_root, tmp_path):
    (flickr_root / "val.txt").write_text("1234\nnot-an-id\n")
    with pytest.raises(SourceFileError, match=r"val\.txt at line 2: 'not-an-id' is not an image id"):
        build(flickr_root, tmp_path / "out", splits=("train", "validation"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("line", "reason", "detail"), [
    ("[/EN#1/people A man [/EN#2/clothing a hat] .", "unbalanced_brackets", "opens inside another phrase"),
    ("A man ] walks .", "unbalanced_brackets", "closes no"),
    ("[/EN#1/people A man walks .", "unbalanced_brackets", "never closed"),
    ("[EN#1 people A man] walks .", "bad_phrase", "is not"),
    ("[/EN#1/people] walks .", "bad_phrase", "is not"),
])
def test_parse_caption_rejects(line, reason, detail):
    from builders.errors import SkipRecord

    with pytest.raises(SkipRecord, match=detail) as caught:
        parse_caption(line)
    assert caught.value.reason == reason


def test_entity_expansion_bomb_is_refused(flickr_root, tmp_path):
    """A 'billion laughs' XML (10^9 expanded characters) is refused by expat as malformed, not expanded."""
    entities = ['<!ENTITY e0 "lollollollol">'] + [
        f'<!ENTITY e{k} "{("&e" + str(k - 1) + ";") * 10}">' for k in range(1, 10)]
    bomb = (f'<?xml version="1.0"?><!DOCTYPE annotation [{"".join(entities)}]>'
            "<annotation><size><width>&e9;</width><height>1</height></size></annotation>")
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(bomb)
    report = build(flickr_root, tmp_path / "out")
    assert report.skipped["train"]["malformed_xml"] == 1
    assert "amplification" in report.skip_examples["malformed_xml"][0]


def test_mdetr_cluster_across_chains_is_expanded_per_chain(flickr_root, tmp_path):
    """A real MDETR-style cluster: the girl and her dress (IoU 0.978 >= 0.95) in caption 2 of the girl image.

    ``flickr_combined.py`` wrote one annotation for the cluster (the *last* box, the dress's, with the spans of
    both chains) and one for the water. Both chains must come back as regions, as in the entities layout.
    """
    girl, dress, water = (180, 120, 320, 370), (182, 122, 320, 370), (1, 1, 500, 200)
    objects = [(["221796"], girl), (["221797"], dress), (["221798"], water), (["221799"], None)]
    (flickr_root / "Annotations" / f"{GIRL}.xml").write_text(xml_text(GIRL, objects))
    caption = "A girl sitting outside on concrete near water in a black dress ."
    root = tmp_path / "mdetr"
    (root / "mdetr_annotations").mkdir(parents=True)
    (root / "flickr30k-images").mkdir()
    (root / "flickr30k-images" / f"{GIRL}.jpg").touch()
    anns = [mdetr_ann(0, 3, caption, ["A girl", "a black dress"], dress), mdetr_ann(1, 3, caption, ["water"], water)]
    data = {"images": [mdetr_entry(GIRL, 2, caption, 3, 500, 375)], "annotations": anns,
            "categories": [{"supercategory": "object", "id": 1, "name": "object"}]}
    (root / "mdetr_annotations" / "final_flickr_mergedGT_train.json").write_text(json.dumps(data))
    build(root, tmp_path / "m")
    mdetr_row = rows_by_id(tmp_path / "m", "train")[f"flickr30k:train:{GIRL}:2"]
    build(flickr_root, tmp_path / "e")
    entities_row = rows_by_id(tmp_path / "e", "train")[f"flickr30k:train:{GIRL}:2"]
    assert [r["label"] for r in mdetr_row["regions"]] == ["A girl", "water", "a black dress"]
    assert [r["label"] for r in mdetr_row["regions"]] == [r["label"] for r in entities_row["regions"]]
    assert mdetr_row["conversations"] == entities_row["conversations"]
    # MDETR kept only the dress's box for the cluster: both chains get it; the water keeps its own.
    assert [r["bbox"] for r in mdetr_row["regions"]] == [[181.0, 121.0, 320.0, 370.0], [0.0, 0.0, 500.0, 200.0],
                                                         [181.0, 121.0, 320.0, 370.0]]
    assert entities_row["regions"][2]["bbox"] == [181.0, 121.0, 320.0, 370.0]


def test_split_without_rows_fails_with_reasons(flickr_root, tmp_path):
    """The sample's validation split has no files: the build stops naming the split, reason and count."""
    with pytest.raises(BuildRejected, match=r"flickr30k/validation kept no rows; skips by reason: "
                                            r"missing_sentences_file: 1000 \(e\.g\. image \d+"):
        build(flickr_root, tmp_path / "out", splits=("validation",), max_skip_share=0.5)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda entry, ann: ann.update(bbox=["60", 30, 360, 280]), "bad_box_format"),
    (lambda entry, ann: ann.update(bbox=[60, 30, True, 280]), "bad_box_format"),
    (lambda entry, ann: entry.update(sentence_id=[0]), "bad_id"),
    (lambda entry, ann: entry.update(original_img_id="../../etc"), "bad_id"),
    (lambda entry, ann: entry.update(width="Infinity"), "bad_image_size"),
    (lambda entry, ann: entry.update(width=str(2 ** 40)), "bad_image_size"),
    (lambda entry, ann: ann.update(tokens_positive=[["0", "6"]]), "bad_tokens_positive"),
    (lambda entry, ann: entry.update(caption=["A girl"]), "wrong_record_type"),
])
def test_bad_mdetr_records_are_counted(tmp_path, mutate, reason):
    caption = "A girl sits ."
    root = tmp_path / "mdetr"
    (root / "flickr30k-images").mkdir(parents=True)
    (root / "flickr30k-images" / f"{GIRL}.jpg").touch()
    good = (mdetr_entry(GIRL, 0, caption, 1, 500, 375), mdetr_ann(1, 1, caption, ["A girl"], (1, 1, 50, 50)))
    bad = (mdetr_entry(GIRL, 1, caption, 2, 500, 375), mdetr_ann(2, 2, caption, ["A girl"], (1, 1, 50, 50)))
    mutate(*bad)
    data = {"images": [good[0], bad[0]], "annotations": [good[1], bad[1]]}
    (root / "final_flickr_mergedGT_train.json").write_text(json.dumps(data))
    report = build(root, tmp_path / "m")
    assert report.written == {"train": {"multi_region_caption": 1}}
    assert reason in report.skipped["train"]
