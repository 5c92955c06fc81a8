"""GPT4RoIProcessor: template, exact label masks, region rendering, truncation, images, collation."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from PIL import Image, ImageDraw

from builders.errors import SchemaError
from builders.schema import validate
from gpt4roi.processing import (
    IGNORE_INDEX,
    SYSTEM_MESSAGE,
    GPT4RoIProcessor,
    RowInputError,
    load_image,
)
from gpt4roi.tokenizer import IMAGE_PATCH_TOKEN, ROI_TOKEN, train_tiny_tokenizer

NUM_IMAGE_TOKENS = 16


@pytest.fixture(scope="module")
def processor() -> GPT4RoIProcessor:
    return GPT4RoIProcessor(train_tiny_tokenizer(), image_size=32, num_image_tokens=NUM_IMAGE_TOKENS, max_length=512)


def png_bytes(size=(120, 80), colour="navy") -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle([10, 10, 50, 40], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_row(conversations, boxes, row_id="synthetic:train:7", image=None, size=(120, 80)):
    row = {
        "id": row_id,
        "source": "synthetic",
        "variant": "",
        "task": "region_caption",
        "split": "train",
        "image": image if image is not None else {"path": None, "bytes": png_bytes(size)},
        "image_id": "7",
        "width": size[0],
        "height": size[1],
        "regions": [{"bbox": list(b), "segmentation": "", "label": "thing", "source_id": str(i)} for i, b in enumerate(boxes)],
        "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(conversations)],
        "choices": [],
        "label": -1,
        "references": [],
        "meta": "{}",
    }
    return row


MULTI_TURN = make_row(
    [
        "<image>\nWhat is in <region2>? Compare it with <region1>.",
        "region2 holds a blue square, bigger than the red circle in region1.",
        "Describe <region1> again, and then <region3>.",
        "region1: a small red circle.\nregion3: a green triangle at the top right!",
        "Is <region2> left of <region3>?",
        "Yes.",
    ],
    [[10, 10, 50, 40], [60, 5, 110, 70], [0, 0, 120, 80]],
)


def supervised_spans(labels: torch.Tensor) -> list[list[int]]:
    spans, current = [], []
    for value in labels.tolist():
        if value == IGNORE_INDEX:
            if current:
                spans.append(current)
            current = []
        else:
            current.append(value)
    return spans + ([current] if current else [])


def test_rows_used_here_are_schema_valid():
    """MULTI_TURN is a row a builder could write, so the processor is tested on real input; the check has
    teeth: the same row without <region3>'s box is refused."""
    assert validate(MULTI_TURN) is None
    broken = copy.deepcopy(MULTI_TURN)
    broken["regions"].pop()
    with pytest.raises(SchemaError) as refused:
        validate(broken)
    assert (refused.value.row_id, refused.value.rule) == ("synthetic:train:7", "reference_exists")


def test_label_mask_decodes_to_exactly_the_assistant_turns(processor):
    batch = processor([MULTI_TURN])
    spans = supervised_spans(batch["labels"][0])
    answers = [turn["value"] for turn in MULTI_TURN["conversations"] if turn["from"] == "gpt"]
    assert [processor.tokenizer.decode(span) for span in spans] == [answer + "\n###" for answer in answers]
    # Every supervised label is the token at its own position (no shift, no drift).
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    supervised = labels != IGNORE_INDEX
    assert torch.equal(ids[supervised], labels[supervised])


def test_text_follows_the_v0_template_and_renders_regions(processor):
    batch = processor([MULTI_TURN])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    span = "<im_start>" + IMAGE_PATCH_TOKEN * NUM_IMAGE_TOKENS + "<im_end>"
    expected = (
        f"<s>{SYSTEM_MESSAGE}\n\n"
        f"### Human: {span}\nWhat is in region2 <roi>? Compare it with region1 <roi>.\n"
        "### Assistant: region2 holds a blue square, bigger than the red circle in region1.\n"
        "### Human: Describe region1 again, and then region3 <roi>.\n"
        "### Assistant: region1: a small red circle.\nregion3: a green triangle at the top right!\n"
        "### Human: Is region2 left of region3?\n"
        "### Assistant: Yes.\n###"
    )
    assert text == expected
    # Boxes follow the order of first mention (2, 1, 3), normalised by the original 120x80 size.
    expected_boxes = torch.tensor([[60, 5, 110, 70], [10, 10, 50, 40], [0, 0, 120, 80]]) / torch.tensor([120, 80, 120, 80])
    torch.testing.assert_close(batch["boxes"][0], expected_boxes.float())


def test_generation_prompt_ends_with_the_assistant_header(processor):
    batch = processor([MULTI_TURN], generation=True)
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.endswith("### Human: Is region2 left of region3?\n### Assistant: ")
    assert "Yes." not in text and "labels" not in batch
    # The prompt is token for token the prefix of the training sequence.
    train_ids = processor([MULTI_TURN])["input_ids"][0].tolist()
    prompt_ids = batch["input_ids"][0].tolist()
    assert train_ids[: len(prompt_ids)] == prompt_ids


def test_truncation_drops_whole_trailing_turns_and_their_regions(processor):
    full = processor.encode(MULTI_TURN)
    roi = processor.roi_token_id
    seen_lengths = set()
    for max_length in range(len(full.input_ids), 40, -7):
        small = GPT4RoIProcessor(processor.tokenizer, 32, NUM_IMAGE_TOKENS, max_length=max_length)
        try:
            encoded = small.encode(MULTI_TURN)
        except RowInputError as error:
            assert "synthetic:train:7" in str(error) and "first exchange" in str(error)
            continue
        assert len(encoded.input_ids) <= max_length
        assert encoded.input_ids.count(roi) == len(encoded.boxes) == len(encoded.regions)
        # A prefix of the full sequence, ending with an assistant turn's stop marker.
        assert encoded.input_ids == full.input_ids[: len(encoded.input_ids)]
        assert small.tokenizer.decode(encoded.input_ids).endswith("\n###")
        seen_lengths.add((encoded.dropped_turns, tuple(encoded.regions)))
    # Dropping the last exchange keeps all three regions; dropping two loses region3 (only mentioned in turn 3).
    assert (2, (1, 0, 2)) in seen_lengths and (4, (1, 0)) in seen_lengths


def test_roi_and_box_mismatch_names_the_row(processor):
    literal = make_row(["<image>\nWhat is <region1>? Ignore " + ROI_TOKEN + " please.", "a square"], [[1, 1, 9, 9]], row_id="vg:train:42")
    with pytest.raises(RowInputError, match=r"vg:train:42.*2 <roi> tokens for 1 boxes"):
        processor.encode(literal)
    missing = make_row(["<image>\nCompare <region1> and <region3>.", "same"], [[1, 1, 9, 9], [2, 2, 8, 8]], row_id="vg:train:43")
    with pytest.raises(RowInputError, match=r"vg:train:43.*<region3>"):
        processor.encode(missing)


def test_collate_rows_with_zero_one_and_three_regions(processor):
    rows = [
        make_row(["<image>\nDescribe the picture.", "a navy box"], [], row_id="a"),
        make_row(["<image>\nWhat is <region1>?", "a navy box"], [[10, 10, 50, 40]], row_id="b"),
        MULTI_TURN,
    ]
    batch = processor(rows)
    assert [len(b) for b in batch["boxes"]] == [0, 1, 3]
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    lengths = batch["attention_mask"].sum(dim=1)
    for index in range(3):
        ids = batch["input_ids"][index]
        assert int((ids == processor.roi_token_id).sum()) == len(batch["boxes"][index])
        assert bool((ids[lengths[index] :] == processor.tokenizer.pad_token_id).all())
        assert bool((batch["labels"][index][lengths[index] :] == IGNORE_INDEX).all())
    left = processor(rows, generation=True)
    assert bool((left["attention_mask"][:, -1] == 1).all())  # left padded: every prompt ends at the last column


def test_images_from_bytes_path_and_pil(tmp_path, processor):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes(colour="red"))
    from_path = make_row(["<image>\nHi", "Hello"], [], image="imgs/a.png")
    from_bytes = make_row(["<image>\nHi", "Hello"], [], image={"path": "ignored.png", "bytes": png_bytes(colour="red")})
    pil = Image.open(io.BytesIO(png_bytes(colour="red")))
    a = processor.pixel_values(load_image(from_path, tmp_path))
    b = processor.pixel_values(load_image(from_bytes, None))
    c = processor.encode(from_path, image=pil).pixel_values
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    # CLIP normalisation: pure white maps to (1 - mean) / std.
    white = processor.pixel_values(Image.new("RGB", (5, 5), "white"))
    torch.testing.assert_close(white[:, 0, 0], (1 - torch.tensor(processor.image_mean)) / torch.tensor(processor.image_std))


@pytest.mark.parametrize(
    ("image", "root", "message"),
    [
        ("imgs/missing.png", "root", r"does not exist"),
        ("../outside.png", "root", r"refused"),
        ("imgs/a.png", None, r"needs an image_root"),
        ({"path": None, "bytes": b"not an image"}, None, r"not a readable image"),
    ],
)
def test_image_errors_name_the_row(tmp_path, image, root, message):
    row = make_row(["<image>\nHi", "Hello"], [], row_id="coco:val:9", image=image)
    with pytest.raises(RowInputError, match=rf"coco:val:9.*{message}"):
        load_image(row, tmp_path if root else None)


def test_save_and_load_round_trip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    loaded = GPT4RoIProcessor.from_pretrained(tmp_path)
    a, b = processor([MULTI_TURN]), loaded([MULTI_TURN])
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert loaded.to_dict() == processor.to_dict()


def test_tiny_tokenizer_is_lossless_on_unseen_text(processor):
    text = "Ünïcode ✓, tabs\tand  double spaces; region12 <roi> ### end"
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.decode(ids) == text
    assert re.search(r"region12 <roi>", processor.tokenizer.decode(ids))
