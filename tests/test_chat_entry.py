"""``gpt4roi chat``: the command line, and the models it loads (geometry, the tiny GPT4RoI, saved folders)."""

from __future__ import annotations

import builtins

import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from gpt4roi.chat import Session
from gpt4roi.chat.loading import GPT4RoIChat, load_chat_model
from gpt4roi.cli import main as gpt4roi


def test_terminal_chat_from_the_command_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "room.png"
    Image.new("RGB", (640, 480), (90, 90, 90)).save(path)
    lines = iter(["/box 10 10 200 200", "What is <region1>?", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda: next(lines))
    assert gpt4roi(["chat", "model=geometry", "ui=cli", f"image={path}"]) == 0
    out = capsys.readouterr().out
    assert "image room.png: 640x480 pixels" in out
    assert "model: Round 1: the image is 640x480 pixels with 1 region(s) in the conversation. " \
           "region1 spans [10, 10, 200, 200]" in out


def test_web_chat_serves_on_loopback_by_default(monkeypatch, capsys):
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: served.update(app=app, host=host,
                                                                                        port=port))
    assert gpt4roi(["chat", "model=geometry"]) == 0
    assert (served["host"], served["port"]) == ("127.0.0.1", 7860)
    assert "GPT4RoI region chat: http://127.0.0.1:7860/ (model: BoxGeometryModel" in capsys.readouterr().out
    state = TestClient(served["app"]).get("/api/state").json()
    assert state["model"].startswith("BoxGeometryModel")

    assert gpt4roi(["chat", "model=geometry", "host=0.0.0.0", "port=8123", "limits.max_upload_mb=1"]) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 8123)
    assert "reachable from other machines; the chat has no login" in capsys.readouterr().out
    too_big = TestClient(served["app"]).post("/api/image", files={"file": ("a.png", b"x" * 1_200_000)})
    assert too_big.status_code == 413


def test_command_line_mistakes_are_explained(tmp_path, capsys):
    assert gpt4roi(["chat"]) == 2
    assert "missing required setting(s): model" in capsys.readouterr().err
    assert gpt4roi(["chat", "model=geometry", "ui=tk"]) == 1
    assert "ui='tk': expected one of web, cli" in capsys.readouterr().err
    assert gpt4roi(["chat", "model=nonsense"]) == 1
    err = capsys.readouterr().err
    assert "model='nonsense' is neither 'geometry', a folder, nor a model config" in err and "tiny" in err
    assert gpt4roi(["chat", f"model={tmp_path}"]) == 1
    assert f"model={tmp_path}: not a saved model (no config.json in it or in hf/)" in capsys.readouterr().err
    assert gpt4roi(["chat", "model=geometry", "ui=cli", f"image={tmp_path / 'missing.png'}"]) == 1
    assert "missing.png: cannot read the image" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny():
    model, name = load_chat_model("tiny", max_new_tokens=4)
    return model, name


def ask_twice(model) -> list[tuple[dict, str]]:
    session = Session(model, Image.new("RGB", (320, 240), (200, 120, 40)))
    session.add_box([20, 30, 120, 200])
    session.add_box([150, 40, 300, 220])
    rows = [session.row("What is <region1> next to <region2>?")]
    answers = [session.ask("What is <region1> next to <region2>?")]
    rows.append(session.row("And <region1>?"))
    answers.append(session.ask("And <region1>?"))
    return list(zip(rows, answers, strict=True))


@pytest.mark.slow  # three generations: ~16-30 s on a busy 2-core machine
def test_the_tiny_gpt4roi_answers_the_chat_rows(tiny):
    from gpt4roi.modeling.inference import generate_for_rows

    model, name = tiny
    assert name == "GPT4RoI tiny (randomly initialised)"
    assert isinstance(model, GPT4RoIChat)
    inner = model
    (_, first), (row, second) = ask_twice(model)
    assert row["conversations"][1]["value"] == first  # the first answer is in the second row's history
    # The chat's row (embedded image, regions, whole history) goes to GPT4RoI unchanged.
    assert second == generate_for_rows(inner.model, inner.processor, [row], max_new_tokens=4)[0]


@pytest.mark.slow
def test_saved_models_and_training_checkpoints_load_with_their_weights(tmp_path):
    import torch
    from omegaconf import OmegaConf

    from gpt4roi.configs import config_dir
    from gpt4roi.modeling.factory import save_pretrained
    from gpt4roi.train import checkpoint

    model, _ = load_chat_model("tiny", max_new_tokens=4)
    inner = model
    with torch.no_grad():  # weights that a fresh (seeded) random init would not have
        for parameter in inner.model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    trained = {name: tensor.clone() for name, tensor in inner.model.state_dict().items()}
    expected = [answer for _, answer in ask_twice(model)]

    save_pretrained(inner.model, inner.processor, tmp_path / "run" / "hf")
    identity = OmegaConf.to_container(OmegaConf.load(config_dir() / "architecture" / "tiny.yaml"))
    for key in ("image_root", "max_length"):  # as the training harness records a model's identity
        identity.pop(key, None)
    checkpoint.save_weights(tmp_path / "final", inner.model, {"model": identity, "step": 1})

    for folder in (tmp_path / "run" / "hf", tmp_path / "run", tmp_path / "final"):
        loaded, name = load_chat_model(str(folder), max_new_tokens=4)
        assert str(folder) in name
        weights = loaded.model.state_dict()
        assert all(torch.equal(weights[key], value) for key, value in trained.items())
        assert [answer for _, answer in ask_twice(loaded)] == expected
