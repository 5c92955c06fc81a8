"""GPT4RoI's answers stream token by token: through a transformers streamer in ``generate``, to the session and
to the page's server-sent events; the pieces join to the whole-answer generation; a page that goes away stops
the generation."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_chat_server import events, png, upload

from gpt4roi.chat import Session
from gpt4roi.chat.loading import GPT4RoIChat
from gpt4roi.chat.server import create_app
from gpt4roi.modeling.inference import _showable, generate_for_rows, stream_for_row

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("text, expected", [
    ("  It is", ("It is", False)),
    ("It is red. ", ("It is red.", False)),
    ("It is red. #", ("It is red.", False)),          # may be the start of "###"
    ("It is red. ##", ("It is red.", False)),
    ("It is red. #1 in", ("It is red. #1 in", False)),
    ("It is red.\n### Human", ("It is red.", True)),
    ("caf\ufffd", ("caf", False)),                    # an incomplete character waits for its next byte
])
def test_only_what_the_final_answer_starts_with_is_shown(text, expected):
    assert _showable(text, ("###",)) == expected


@pytest.fixture(scope="module")
def tiny() -> GPT4RoIChat:
    from omegaconf import OmegaConf

    from gpt4roi.configs import config_dir
    from gpt4roi.modeling.factory import build_model

    model, processor = build_model(OmegaConf.load(config_dir() / "architecture" / "tiny.yaml"))
    return GPT4RoIChat(model.eval(), processor, max_new_tokens=12)


def chat_row() -> dict:
    session = Session(None, Image.new("RGB", (320, 240), (200, 120, 40)))
    session.add_box([20, 30, 120, 200])
    return session.row("What is <region1>?")


def test_the_answer_arrives_token_by_token_and_equals_the_whole_answer(tiny):
    row = chat_row()
    pieces = list(tiny.stream(row))
    whole = generate_for_rows(tiny.model, tiny.processor, [row], max_new_tokens=12)[0]
    assert len(pieces) >= 6 and all(pieces)  # 12 tokens of a random model: most add text
    assert "".join(pieces) == whole


def test_closing_the_stream_stops_generation(tiny):
    steps: list[int] = []
    hook = tiny.model.register_forward_hook(lambda *_: steps.append(1))
    try:
        stream = stream_for_row(tiny.model, tiny.processor, chat_row(), max_new_tokens=400)
        assert next(stream)
        stream.close()  # what the page's worker does when the browser goes away
    finally:
        hook.remove()
    assert not any(thread.name == "gpt4roi-generate" for thread in threading.enumerate())
    assert len(steps) < 10  # a few decoding steps, not 400


def test_the_page_receives_gpt4roi_tokens_as_separate_events(tiny):
    client = TestClient(create_app(tiny, model_name="tiny"))
    upload(client, png(320, 240, (200, 120, 40)))
    stream = events(client.post("/api/chat", json={"message": "What is <region1>?", "boxes": [[20, 30, 120, 200]]}))
    chunks = [data for kind, data in stream if kind == "chunk"]
    assert stream[-1][0] == "done" and len(chunks) >= 6
    assert stream[-1][1]["history"][0]["answer"] == "".join(chunks).strip()
