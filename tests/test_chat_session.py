"""The conversation logic behind the chat page and the terminal: numbering, rows, history, errors."""

from __future__ import annotations

import io
import json
import re

import pytest
from PIL import Image

from builders.schema import validate
from gpt4roi.chat import BoxGeometryModel, ChatError, GenerateAdapter, ModelError, Session, as_chat_model
from gpt4roi.chat.cli import run_terminal
from gpt4roi.chat.session import parse_box


class Recorder:
    """A chat model that remembers every row it was asked about and answers with a fixed text."""

    def __init__(self, answer: str = "an answer about region1"):
        self.rows: list[dict] = []
        self.answer = answer

    def stream(self, row):
        self.rows.append(row)
        yield from re.findall(r"\S+\s*", self.answer)


def picture(width: int = 640, height: int = 480) -> Image.Image:
    return Image.new("RGB", (width, height), (30, 120, 200))


def test_boxes_drawn_in_later_rounds_get_the_next_numbers_and_earlier_ones_stay_referable():
    model = Recorder()
    session = Session(model, picture())
    assert session.add_box([10, 20, 110, 220]) == 1
    assert session.add_box([300, 40, 500, 200]) == 2
    session.ask("What is <region1> holding next to <region2>?")
    assert session.add_box([50, 300, 200, 470]) == 3
    session.ask("And <region3>?")
    session.ask("Is <region1> bigger than <region3>?")

    last = model.rows[-1]
    assert [r["bbox"] for r in last["regions"]] == [[10, 20, 110, 220], [300, 40, 500, 200], [50, 300, 200, 470]]
    assert [t["value"] for t in last["conversations"] if t["from"] == "human"] == [
        "<image>\nWhat is <region1> holding next to <region2>?", "And <region3>?",
        "Is <region1> bigger than <region3>?"]
    assert session.committed == 3


def test_the_row_follows_the_schema_and_carries_the_whole_history():
    model = Recorder(answer="It is <region1>, a dog.")
    session = Session(model, picture(800, 600), image_name="dog.jpg")
    session.add_box([-5, 10, 100, 650])  # overhangs the border: clipped like every schema box
    session.ask("What is <region1>?")
    session.ask("What colour is it?")

    first, second = model.rows
    for row in model.rows:
        validate(row)
        assert (row["width"], row["height"]) == (800, 600)
        assert row["image"]["path"] == "dog.jpg"
        assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (800, 600)
        assert row["conversations"][-1] == {"from": "gpt", "value": ""}
        assert sum(t["value"].count("<image>") for t in row["conversations"]) == 1
    assert first["regions"][0]["bbox"] == [0.0, 10.0, 100.0, 600.0]
    assert first["conversations"][0]["value"] == "<image>\nWhat is <region1>?"
    # The model's answer is in the history of the next row, with the placeholder turned into plain text.
    assert second["conversations"][:3] == [
        {"from": "human", "value": "<image>\nWhat is <region1>?"},
        {"from": "gpt", "value": "It is region1, a dog."},
        {"from": "human", "value": "What colour is it?"},
    ]
    assert json.loads(second["meta"])["round"] == 2
    assert session.history == [("What is <region1>?", "It is region1, a dog."),
                               ("What colour is it?", "It is region1, a dog.")]


def test_a_question_without_boxes_sends_no_regions_and_pending_boxes_wait():
    model = Recorder()
    session = Session(model, picture())
    session.add_box([0, 0, 50, 50])
    session.ask("Describe the picture.")
    assert model.rows[0]["regions"] == []
    assert session.committed == 0
    session.move_box(1, [10, 10, 60, 60])  # still pending: may move
    session.ask("What about <region1>?")
    assert model.rows[1]["regions"][0]["bbox"] == [10, 10, 60, 60]


@pytest.mark.parametrize(("message", "expected"), [
    ("Where is <region3>?", "<region3> refers to a box that does not exist (boxes: 1-2)"),
    ("   ", "the message is empty"),
    ("<image> what is <region1>?", "<image> is added by the chat itself"),
    ("What is <region2>?", "box(es) 1 would be sent to the model without being referred to"),
    ("What is \ud800 <region1>?", "the message holds a broken character (an unpaired surrogate)"),
])
def test_bad_messages_are_refused_with_a_clear_message_and_nothing_is_asked(message, expected):
    model = Recorder()
    session = Session(model, picture())
    session.add_box([0, 0, 50, 50])
    session.add_box([60, 60, 120, 120])
    with pytest.raises(ChatError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        session.stream(message)
    assert model.rows == [] and session.history == []


def test_no_image_and_missing_boxes_are_explained():
    session = Session(Recorder())
    with pytest.raises(ChatError, match="no image yet: upload an image or pick an example"):
        session.ask("hello")
    with pytest.raises(ChatError, match="no image yet"):
        session.add_box([0, 0, 10, 10])
    session.set_image(picture())
    with pytest.raises(ChatError, match=r"<region1> refers to a box that does not exist \(boxes: none drawn\)"):
        session.ask("What is <region1>?")


def test_boxes_are_checked_against_the_image():
    session = Session(Recorder(), picture(100, 80))
    with pytest.raises(ChatError, match="box 1: box .* is under 2.0 px wide or high"):
        session.add_box([10, 10, 11, 40])
    with pytest.raises(ChatError, match="box 1: box .* lies outside the 100x80 image"):
        session.add_box([200, 10, 300, 40])
    with pytest.raises(ChatError, match="box 1: expected four numbers"):
        session.add_box([1, 2, 3])
    assert session.boxes == []


def test_boxes_in_the_conversation_are_fixed_and_pending_ones_renumber_on_delete():
    session = Session(Recorder(), picture())
    for box in ([0, 0, 50, 50], [60, 60, 120, 120], [200, 200, 260, 260], [300, 300, 400, 400]):
        session.add_box(box)
    session.ask("Compare <region1> and <region2>.")
    for action in (lambda: session.delete_box(2), lambda: session.move_box(1, [5, 5, 55, 55])):
        with pytest.raises(ChatError, match="is part of the conversation and cannot be"):
            action()
    session.delete_box(3)
    assert [b.xyxy for b in session.boxes] == [(0, 0, 50, 50), (60, 60, 120, 120), (300, 300, 400, 400)]
    with pytest.raises(ChatError, match="there is no box 7"):
        session.delete_box(7)


def test_set_boxes_keeps_the_conversation_boxes_and_replaces_the_pending_ones():
    session = Session(Recorder(), picture())
    session.set_boxes([[0, 0, 50, 50], [60, 60, 120, 120]])
    session.ask("<region1> and <region2>?")
    session.set_boxes([[0, 0, 50, 50], [60, 60, 120, 120], [1, 2, 30, 40]])
    assert [b.number for b in session.boxes] == [1, 2, 3]
    with pytest.raises(ChatError, match="box 2 is part of the conversation and cannot be changed"):
        session.set_boxes([[0, 0, 50, 50], [70, 60, 120, 120]])
    with pytest.raises(ChatError, match="boxes 1-2 are part of the conversation and cannot be removed"):
        session.set_boxes([[0, 0, 50, 50]])
    assert len(session.boxes) == 3


def test_a_failing_model_leaves_the_conversation_as_it_was():
    class Broken:
        def stream(self, row):
            yield "half an "
            raise RuntimeError("out of memory")

    session = Session(Broken(), picture())
    session.add_box([0, 0, 50, 50])
    chunks = []
    with pytest.raises(ModelError, match="the model failed: RuntimeError: out of memory"):
        for chunk in session.stream("What is <region1>?"):
            chunks.append(chunk)
    assert chunks == ["half an "]
    assert session.history == [] and session.committed == 0
    session.delete_box(1)  # still pending


def test_clear_and_new_image_start_over():
    session = Session(Recorder(), picture())
    session.add_box([0, 0, 50, 50])
    session.ask("<region1>?")
    session.clear()
    assert (session.boxes, session.history, session.committed) == ([], [], 0)
    session.add_box([0, 0, 50, 50])
    session.set_image(picture(300, 200), "other.png")
    assert session.boxes == [] and session.size == (300, 200)


def test_generate_only_models_are_adapted():
    class Batch:
        def __init__(self):
            self.calls = []

        def generate(self, rows, **kwargs):
            self.calls.append((rows, kwargs))
            return [f"{len(rows[0]['regions'])} region(s)"]

    batch = Batch()
    model = as_chat_model(batch, max_new_tokens=12)
    assert isinstance(model, GenerateAdapter)
    session = Session(model, picture())
    session.add_box([0, 0, 50, 50])
    assert session.ask("<region1>?") == "1 region(s)"
    assert batch.calls[0][1] == {"max_new_tokens": 12}
    assert as_chat_model(model) is model

    class Wrong:
        def generate(self, rows, **kwargs):
            return ["a", "b"]

    with pytest.raises(ModelError, match=r"Wrong.generate returned \['a', 'b'\] for one row"):
        Session(as_chat_model(Wrong()), picture()).ask("hi")
    with pytest.raises(TypeError, match="has neither stream"):
        as_chat_model(object())


def test_the_geometry_model_describes_the_referenced_boxes():
    session = Session(BoxGeometryModel(), picture(1000, 500))
    session.add_box([100, 50, 300, 250])
    session.add_box([600, 100, 900, 400])
    answer = session.ask("What is <region2> next to <region1>?")
    assert answer == (
        "Round 1: the image is 1000x500 pixels with 2 region(s) in the conversation. "
        "region2 spans [600, 100, 900, 400], 300x300 px, 18.0% of the image, in the middle right. "
        "region1 spans [100, 50, 300, 250], 200x200 px, 8.0% of the image, in the top left. "
        "region2 is right of region1 (IoU 0.00).")
    assert session.ask("Thanks.").startswith("Round 2: the image is 1000x500 pixels with 2 region(s)")


def test_parse_box_accepts_typed_coordinates():
    assert parse_box("[10, 20.5, 30, 40]") == [10, 20.5, 30, 40]
    assert parse_box("1 2 3 4") == [1, 2, 3, 4]
    for text in ("1 2 3", "a b c d", "1 2 3 nan"):
        with pytest.raises(ChatError, match="expected four"):
            parse_box(text)


def test_the_terminal_chat_takes_boxes_as_coordinates(tmp_path):
    path = tmp_path / "street.png"
    picture(400, 300).save(path)
    (tmp_path / "notes.txt").write_text("not an image")
    out = io.StringIO()
    lines = [f"/image {path}", "/box 10 20 110 220", "/box 200,50,390,290", "/boxes",
             "What is <region1> next to <region2>?", "/delete 1", "<region9>?", f"/image {tmp_path / 'notes.txt'}",
             "/frobnicate", "/history", "/quit", "never read"]
    status = run_terminal(Session(BoxGeometryModel()), lines=lines, out=out, prompt=False)
    text = out.getvalue()
    assert status == 0
    assert "image street.png: 400x300 pixels" in text
    assert "box 2: (200.0, 50.0, 390.0, 290.0) -> refer to it as <region2>" in text
    assert "<region1> [10.0, 20.0, 110.0, 220.0] (not used yet)" in text
    assert "model: Round 1: the image is 400x300 pixels with 2 region(s)" in text
    assert "region1 is left of region2" in text
    assert "error: box 1 is part of the conversation and cannot be deleted" in text
    assert "error: <region9> refers to a box that does not exist (boxes: 1-2)" in text
    assert "notes.txt: not an image that can be read" in text
    assert "error: unknown command /frobnicate" in text
    assert "you: What is <region1> next to <region2>?" in text
