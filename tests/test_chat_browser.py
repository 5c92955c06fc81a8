"""End to end in a real browser: Debian's Chromium driven by Playwright against the chat server on loopback.

The browser draws boxes with mouse events on the page's canvas; a recording model wrapper checks what the
model received (boxes in image pixels, the question, the history). Screenshots go to the test's tmp folder;
set GPT4ROI_CHAT_SCREENSHOT=<path> to also keep the first test's screenshot (docs/chat_screenshot.png).
Skipped only when no Chromium (or Playwright) is installed, and failed instead under CI=true.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn

from gpt4roi.chat import BoxGeometryModel
from gpt4roi.chat.examples import example_image
from gpt4roi.chat.loading import load_chat_model
from gpt4roi.chat.server import create_app

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ANSWER_TIMEOUT_MS = 180_000  # the tiny model on a busy CPU


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required under CI=true: .ci/run installs chromium)")
    pytest.skip(reason)


def find_chromium() -> str | None:
    for candidate in (os.environ.get("GPT4ROI_CHROMIUM"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class Recording:
    """Wraps a chat model; keeps each row it was asked about and the answer it gave."""

    def __init__(self, inner):
        self.inner = inner
        self.rows: list[dict] = []
        self.answers: list[str] = []

    def stream(self, row):
        self.rows.append(row)
        chunks = []
        for chunk in self.inner.stream(row):
            chunks.append(chunk)
            yield chunk
        self.answers.append("".join(chunks))


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = find_chromium()
    if executable is None:
        _unavailable("no Chromium found (apt-get install chromium, or set GPT4ROI_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=executable, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860})
        yield context
        context.close()


@contextmanager
def serve(model, name: str = "BoxGeometryModel (recorded)"):
    """Run the chat app for ``model`` with uvicorn on a free loopback port; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(model, model_name=name), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the chat server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def page(browser):
    browser.clear_cookies()  # each test is a new visitor with its own conversation
    page = browser.new_page()
    yield page
    page.close()


def open_page(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")


def canvas_origin(page) -> tuple[float, float, float]:
    """The canvas's top-left corner on the page and its display width."""
    box = page.locator("#canvas").bounding_box()
    return box["x"], box["y"], box["width"]


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A left-button drag between two points given relative to the canvas's top-left corner."""
    x0, y0, _ = canvas_origin(page)
    page.mouse.move(x0 + start[0], y0 + start[1])
    page.mouse.down()
    page.mouse.move(x0 + end[0], y0 + end[1], steps=6)
    page.mouse.up()


def click_canvas(page, at: tuple[float, float]) -> None:
    x0, y0, _ = canvas_origin(page)
    page.mouse.click(x0 + at[0], y0 + at[1])


def in_pixels(display_box, scale: float) -> list[float]:
    return [round(v * scale) for v in display_box]


def wait_for_answer(page, count: int) -> str:
    page.wait_for_function(f"document.querySelectorAll('.turn.gpt:not(.streaming)').length >= {count}",
                           timeout=ANSWER_TIMEOUT_MS)
    return page.locator(".turn.gpt").nth(count - 1).text_content()


@pytest.mark.parametrize("model_name", ["tiny", "geometry"])
def test_draw_two_boxes_and_ask_about_them(page, tmp_path, model_name):
    inner, name = (BoxGeometryModel(), "BoxGeometryModel") if model_name == "geometry" else \
        load_chat_model("tiny", max_new_tokens=8)
    model = Recording(inner)
    picture = tmp_path / "street.png"
    example_image("synthetic-1").resize((1000, 800)).save(picture)
    with serve(model, f"{name} (recorded)") as url:
        open_page(page, url)
        page.set_input_files("#upload", str(picture))
        page.wait_for_function("document.getElementById('placeholder').hidden")
        _, _, shown_width = canvas_origin(page)
        scale = 1000 / shown_width  # image pixels per display pixel (the picture is shown at 675 px)
        assert shown_width == pytest.approx(675, abs=1)

        first, second = (55, 336, 215, 495), (296, 272, 455, 424)  # around the circle and the middle star
        drag(page, first[:2], first[2:])
        drag(page, second[:2], second[2:])
        assert page.locator("#box-list li").count() == 2

        page.click("#message")
        page.keyboard.type("What is ")
        click_canvas(page, (135, 415))  # inside box 1: inserts <region1>
        page.keyboard.type(" doing next to ")
        click_canvas(page, (375, 350))  # inside box 2
        page.keyboard.type("?")
        question = "What is <region1> doing next to <region2>?"
        assert page.input_value("#message") == question
        page.click("#send")
        shown = wait_for_answer(page, 1)

        row = model.rows[0]
        assert (row["width"], row["height"]) == (1000, 800)
        assert row["conversations"][0]["value"] == f"<image>\n{question}"
        received = [region["bbox"] for region in row["regions"]]
        assert len(received) == 2
        for got, drawn in zip(received, (first, second), strict=True):
            assert got == pytest.approx(in_pixels(drawn, scale), abs=1.0)
        assert shown.strip() == model.answers[0].strip()
        if model_name == "geometry":
            x1, y1, x2, y2 = received[0]
            assert f"region1 spans [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]" in shown
        assert page.input_value("#message") == ""
        assert page.locator("#error").is_hidden()
        page.screenshot(path=str(tmp_path / "chat.png"))
        if model_name == "geometry" and os.environ.get("GPT4ROI_CHAT_SCREENSHOT"):
            shutil.copy(tmp_path / "chat.png", os.environ["GPT4ROI_CHAT_SCREENSHOT"])


def test_edit_boxes_talk_over_rounds_and_see_errors(page, tmp_path):
    model = Recording(BoxGeometryModel())
    with serve(model) as url:
        open_page(page, url)
        page.select_option("#examples", "synthetic-1")  # 320x256, shown twice as large
        page.wait_for_function("document.getElementById('placeholder').hidden")
        boxes = lambda: page.evaluate("state.boxes")  # noqa: E731

        drag(page, (20, 20), (120, 120))
        drag(page, (200, 40), (300, 140))
        drag(page, (400, 300), (500, 400))
        assert boxes() == [[10, 10, 60, 60], [100, 20, 150, 70], [200, 150, 250, 200]]
        drag(page, (250, 90), (290, 130))  # move box 2 by (+20, +20) image pixels
        drag(page, (500, 400), (560, 440))  # resize box 3 from its bottom-right corner
        assert boxes() == [[10, 10, 60, 60], [120, 40, 170, 90], [200, 150, 280, 220]]

        drag(page, (560, 20), (620, 80))  # box 4, selected and focused after drawing
        page.keyboard.press("Delete")
        assert len(boxes()) == 3

        page.fill("#message", "Is <region3> bigger than <region1>?")
        page.locator("#box-list li[data-number='2'] button[title='delete box 2']").click()
        assert page.input_value("#message") == "Is <region2> bigger than <region1>?"  # renumbered with the box
        assert boxes() == [[10, 10, 60, 60], [200, 150, 280, 220]]

        page.fill("#message", "Where is <region7>?")
        page.click("#send")
        page.wait_for_selector("#error:not([hidden])")
        assert page.text_content("#error") == "<region7> refers to a box that does not exist (boxes: 1-2)"
        assert model.rows == []

        page.fill("#message", "Is <region2> bigger than <region1>?")
        page.click("#send")
        wait_for_answer(page, 1)
        assert page.locator("#error").is_hidden()
        assert "fixed" in page.text_content("#box-list li[data-number='1']")
        drag(page, (60, 60), (200, 200))  # a box of the conversation does not move
        assert boxes()[0] == [10, 10, 60, 60]

        drag(page, (420, 40), (520, 100))  # round 2: the next number
        assert len(boxes()) == 3
        page.fill("#message", "And <region3> compared with <region1>?")
        page.keyboard.press("Enter")
        wait_for_answer(page, 2)
        second = model.rows[1]
        assert [r["bbox"] for r in second["regions"]] == [[10, 10, 60, 60], [200, 150, 280, 220],
                                                          [210, 20, 260, 50]]
        assert [t["value"] for t in second["conversations"]] == [
            "<image>\nIs <region2> bigger than <region1>?", model.answers[0].strip(),
            "And <region3> compared with <region1>?", ""]

        page.reload()  # the conversation lives on the server, found by the cookie
        page.wait_for_selector("body[data-ready=true]")
        assert page.locator(".turn").count() == 4 and len(boxes()) == 3

        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('.turn').length === 0")
        assert boxes() == []

        text_file = tmp_path / "notes.png"
        text_file.write_text("this is not a picture")
        page.set_input_files("#upload", str(text_file))
        page.wait_for_selector("#error:not([hidden])")
        assert page.text_content("#error").startswith("notes.png: not an image that can be read")
        page.screenshot(path=str(tmp_path / "edited.png"))


def test_a_model_failure_is_shown_in_the_page(page):
    class Failing:
        def stream(self, row):
            yield "Looking at "
            raise RuntimeError("CUDA out of memory")

    with serve(Failing(), "failing") as url:
        open_page(page, url)
        page.fill("#message", "Hello?")
        page.click("#send")
        page.wait_for_selector("#error:not([hidden])")
        assert page.text_content("#error") == "no image yet: upload an image or pick an example first"

        page.select_option("#examples", "synthetic-2")
        page.wait_for_function("document.getElementById('placeholder').hidden")
        page.click("#send")
        page.wait_for_function("document.getElementById('error').textContent.includes('CUDA')")
        assert page.text_content("#error") == "the model failed: RuntimeError: CUDA out of memory"
        assert page.locator(".turn").count() == 0  # the failed round is not shown as part of the conversation
        assert page.input_value("#message") == "Hello?"  # the question is kept to try again
        assert page.is_enabled("#send")
