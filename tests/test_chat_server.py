"""The chat page's server through FastAPI's TestClient: uploads, limits, streaming, separate conversations."""

from __future__ import annotations

import io
import json
import random
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from builders.schema import validate
from gpt4roi.chat import BoxGeometryModel
from gpt4roi.chat.images import ImageLimits
from gpt4roi.chat.server import COOKIE, create_app


class Recording:
    """Wraps a chat model and keeps every row it was asked about."""

    def __init__(self, inner):
        self.inner = inner
        self.rows: list[dict] = []

    def stream(self, row):
        self.rows.append(row)
        yield from self.inner.stream(row)


def png(width: int, height: int, colour=(200, 60, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png(width: int, height: int) -> bytes:
    """A PNG that does not compress: cutting it anywhere loses pixel data."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), random.Random(0).randbytes(width * height * 3)).save(buffer, "PNG")
    return buffer.getvalue()


def events(response) -> list[tuple[str, object]]:
    """The (event, data) pairs of a text/event-stream body."""
    parsed = []
    for block in response.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


@pytest.fixture
def model():
    return Recording(BoxGeometryModel())


@pytest.fixture
def app(model):
    return create_app(model, limits=ImageLimits(max_bytes=200_000, max_side=1000, max_pixels=600_000),
                      model_name="geometry")


def upload(client, data: bytes, name: str = "photo.png", content_type: str = "image/png"):
    return client.post("/api/image", files={"file": (name, data, content_type)})


def test_upload_draw_and_ask_streams_the_answer_to_the_model_in_pixels(app, model):
    client = TestClient(app)
    state = upload(client, png(800, 600)).json()
    assert (state["has_image"], state["width"], state["height"]) == (True, 800, 600)
    shown = client.get(state["image_url"])
    assert shown.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(shown.content)).size == (800, 600)

    boxes = [[10.0, 20.0, 210.0, 320.0], [400.5, 100.0, 790.0, 590.0]]
    response = client.post("/api/chat", json={"message": "Is <region1> left of <region2>?", "boxes": boxes})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    stream = events(response)
    kinds = [kind for kind, _ in stream]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"chunk"} and len(kinds) > 10
    answer = "".join(data for kind, data in stream if kind == "chunk")
    assert answer == BoxGeometryModel().answer(model.rows[0])
    assert "region1 is left of region2" in answer
    done = stream[-1][1]
    assert done["committed"] == 2
    assert done["history"] == [{"question": "Is <region1> left of <region2>?", "answer": answer.strip()}]

    row = model.rows[0]
    validate(row)
    assert [region["bbox"] for region in row["regions"]] == boxes
    assert (row["width"], row["height"]) == (800, 600)


def test_conversations_are_separate_per_browser(app, model):
    alice, bob = TestClient(app), TestClient(app)
    upload(alice, png(300, 200))
    assert alice.cookies.get(COOKIE) != bob.cookies.get(COOKIE)
    assert bob.get("/api/state").json()["has_image"] is False
    refused = bob.post("/api/chat", json={"message": "What is this?", "boxes": []})
    assert refused.status_code == 400
    assert refused.json()["error"] == "no image yet: upload an image or pick an example first"

    alice.post("/api/chat", json={"message": "What is <region1>?", "boxes": [[0, 0, 100, 100]]})
    upload(bob, png(500, 400))
    bob.post("/api/chat", json={"message": "Describe it.", "boxes": []})
    assert len(alice.get("/api/state").json()["history"]) == 1
    assert bob.get("/api/state").json()["width"] == 500
    assert [(row["width"], len(row["regions"])) for row in model.rows] == [(300, 1), (500, 0)]
    assert len(app.state.store) == 2


def test_the_session_cookie_is_http_only_and_kept():
    client = TestClient(create_app(BoxGeometryModel()))
    first = client.get("/api/state")
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "set-cookie" not in client.get("/api/state").headers


def test_uploads_over_the_byte_limit_are_refused_before_decoding(app):
    client = TestClient(app)
    response = upload(client, noisy_png(300, 300))  # 270 kB, over the 200 kB limit
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]
    # A file just over the limit still fits the multipart allowance and is refused by the decoder.
    near = upload(client, noisy_png(280, 280))
    assert near.status_code == 413
    assert near.json()["error"] == "photo.png: the file is larger than the upload limit of 200000 bytes"
    # Without a declared length (chunked), the body is counted as it arrives.
    body = b"x" * 400_000
    chunked = client.post("/api/image", content=iter([body[:100_000]] * 4),
                          headers={"content-type": "multipart/form-data; boundary=zz"})
    assert chunked.status_code == 413
    assert client.get("/api/state").json()["has_image"] is False


def test_images_over_the_pixel_limits_are_refused(app):
    client = TestClient(app)
    wide = upload(client, png(1500, 10))
    assert wide.status_code == 413
    assert wide.json()["error"] == ("photo.png: 1500x10 pixels is over the limit of 1000 px per side "
                                    "and 600000 pixels in all")
    many = upload(client, png(900, 900))
    assert many.status_code == 413 and "900x900" in many.json()["error"]


@pytest.mark.parametrize(("data", "expected"), [
    (b"%PDF-1.4 this is a document", "notes.png: not an image that can be read"),
    (noisy_png(100, 100)[:15_000], "notes.png: the image is damaged and cannot be decoded"),
    (b"", "notes.png: the file is empty"),
])
def test_non_images_are_refused_with_a_reason(app, data, expected):
    client = TestClient(app)
    response = upload(client, data, "notes.png")
    assert response.status_code == 415
    assert response.json()["error"].startswith(expected)
    assert client.get("/api/state").json()["has_image"] is False


def test_a_form_without_a_file_is_refused(app):
    response = TestClient(app).post("/api/image", data={"note": "hello"})
    assert response.status_code == 400
    assert response.json()["error"] == "the form has no file field named 'file'"


def test_photos_are_turned_upright_as_browsers_show_them(app):
    image = Image.new("RGB", (300, 100), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    state = upload(TestClient(app), buffer.getvalue(), "phone.jpg", "image/jpeg").json()
    assert (state["width"], state["height"]) == (100, 300)


def test_bad_questions_are_answered_with_the_reason(app, model):
    client = TestClient(app)
    upload(client, png(400, 300))
    missing = client.post("/api/chat", json={"message": "What is <region3>?", "boxes": [[0, 0, 50, 50]]})
    assert missing.status_code == 400
    assert missing.json()["error"] == "<region3> refers to a box that does not exist (boxes: 1)"
    outside = client.post("/api/chat", json={"message": "<region1>", "boxes": [[500, 0, 600, 50]]})
    assert outside.json()["error"] == "box 1: box [500.0, 0.0, 600.0, 50.0] lies outside the 400x300 image"
    malformed = client.post("/api/chat", json={"boxes": "none"})
    assert malformed.status_code == 400 and malformed.json()["error"].startswith("malformed request:")
    assert model.rows == []


def test_boxes_of_the_conversation_cannot_change_and_clear_starts_over(app):
    client = TestClient(app)
    upload(client, png(400, 300))
    client.post("/api/chat", json={"message": "<region1>?", "boxes": [[0, 0, 50, 50]]})
    moved = client.post("/api/chat", json={"message": "<region1>?", "boxes": [[10, 0, 60, 50]]})
    assert moved.status_code == 400
    assert moved.json()["error"].startswith("box 1 is part of the conversation and cannot be changed")
    cleared = client.post("/api/clear").json()
    assert (cleared["boxes"], cleared["committed"], cleared["history"], cleared["has_image"]) == ([], 0, [], True)


def test_a_model_error_reaches_the_page_and_the_round_is_not_kept():
    class Broken:
        def stream(self, row):
            yield "Thinking"
            raise RuntimeError("CUDA out of memory")

    client = TestClient(create_app(Broken()))
    upload(client, png(100, 100))
    stream = events(client.post("/api/chat", json={"message": "Hello?", "boxes": []}))
    assert stream == [("chunk", "Thinking"), ("error", "the model failed: RuntimeError: CUDA out of memory")]
    assert client.get("/api/state").json()["history"] == []


def test_a_second_question_waits_for_the_first_answer():
    release = threading.Event()

    class Slow:
        def stream(self, row):
            yield "first part "
            release.wait(10)
            yield "second part"

    client = TestClient(create_app(Slow()))
    upload(client, png(100, 100))
    with client.stream("POST", "/api/chat", json={"message": "Hello?", "boxes": []}) as response:
        lines = response.iter_lines()
        assert next(lines) == "event: chunk"
        busy = client.post("/api/chat", json={"message": "Again?", "boxes": []})
        assert busy.status_code == 409
        assert busy.json()["error"].startswith("the previous answer is still being written")
        assert client.post("/api/clear").status_code == 409
        release.set()
        rest = "\n".join(lines)
    assert "second part" in rest and "event: done" in rest
    assert client.post("/api/chat", json={"message": "Again?", "boxes": []}).status_code == 200


def test_examples_and_the_page_are_served(app):
    client = TestClient(app)
    names = client.get("/api/examples").json()["examples"]
    assert names == ["synthetic-1", "synthetic-2", "synthetic-3", "synthetic-4"]
    state = client.post("/api/example", json={"name": names[0]}).json()
    # the synthetic world's first COCO validation picture at seed 0
    assert (state["has_image"], state["width"], state["height"]) == (True, 320, 256)
    unknown = client.post("/api/example", json={"name": "nope"})
    assert unknown.status_code == 404 and "no example called 'nope'" in unknown.json()["error"]
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="canvas"' in page.text
    assert "serverEvents" in client.get("/static/chat.js").text
    assert client.get("/static/chat.css").status_code == 200
