"""Slow: the tiny GPT4RoI memorises 8 region captions (2 regions per image) and then generates them exactly."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image, ImageDraw

from builders.schema import validate
from gpt4roi.modeling import build_model, generate_for_rows

TINY = Path(__file__).resolve().parent.parent / "conf" / "architecture" / "tiny.yaml"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40),
           "purple": (140, 50, 170), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (20, 20, 20)}
# (background, [(colour, shape, box), (colour, shape, box)]) per image; each image's two regions differ.
SCENES = [
    ("gray", [("red", "circle", (8, 10, 58, 60)), ("blue", "square", (70, 30, 120, 80))]),
    ("white", [("green", "triangle", (10, 40, 60, 90)), ("red", "square", (70, 5, 118, 53))]),
    ("black", [("yellow", "circle", (60, 50, 116, 106)), ("purple", "triangle", (6, 6, 56, 56))]),
    ("gray", [("orange", "square", (12, 56, 58, 102)), ("green", "circle", (64, 8, 120, 64))]),
]


def draw_scene(background: str, shapes) -> bytes:
    image = Image.new("RGB", (128, 112), {"gray": (128, 128, 128), **COLOURS}[background])
    draw = ImageDraw.Draw(image)
    for colour, shape, (x1, y1, x2, y2) in shapes:
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif shape == "square":
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def caption_rows() -> list[dict]:
    rows = []
    for image_index, (background, shapes) in enumerate(SCENES):
        data = draw_scene(background, shapes)
        regions = [{"bbox": [float(v) for v in box], "segmentation": "", "label": shape, "source_id": str(k)}
                   for k, (_, shape, box) in enumerate(shapes)]
        for k, (colour, shape, _) in enumerate(shapes):
            rows.append({
                "id": f"synthetic:train:{image_index}:{k}", "source": "synthetic", "variant": "", "task": "region_caption_short",
                "split": "train", "image": {"path": f"{image_index}.png", "bytes": data}, "image_id": str(image_index),
                "width": 128, "height": 112, "regions": regions,
                "conversations": [
                    {"from": "human", "value": f"<image>\nThere are two shapes, <region1> and <region2>. Describe <region{k + 1}> briefly."},
                    {"from": "gpt", "value": f"a {colour} {shape}"},
                ],
                "choices": [], "label": -1, "references": [f"a {colour} {shape}"], "meta": "{}",
            })
    return rows


def overfit(model, batch: dict, *, lr: float = 1e-3, target: float = 0.005, max_steps: int = 600) -> list[float]:
    """Train ``model`` on the one ``batch`` with AdamW until the loss is under ``target`` (or ``max_steps``);
    the losses per step. Shared by GPT4RoI's and the image-level baselines' overfit tests."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    for _ in range(max_steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < target:
            break
    return losses


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_tiny_model_overfits_region_captions_and_generates_them():
    rows = caption_rows()
    for row in rows:
        validate(row)
    model, processor = build_model(yaml.safe_load(TINY.read_text()))
    model.set_trainable(["vision", "projector", "region_module", "llm"])
    batch = processor(rows)
    # As the baselines' overfit test: lr 1e-3 and trained on to 0.005. At lr 2e-3 and a batch mean of 0.05 one
    # row's greedy caption could still differ (the two regions of an image share their prompt; only the <roi>
    # feature tells them apart), so the test failed on some machines.
    losses = overfit(model, batch)
    assert losses[-1] < 0.005, f"loss after {len(losses)} steps: {losses[-1]:.4f} (start {losses[0]:.3f})"
    print(f"tiny GPT4RoI overfit: loss {losses[0]:.3f} -> {losses[-1]:.4f} in {len(losses)} steps")
    answers = generate_for_rows(model, processor, rows, max_new_tokens=12)
    assert answers == [row["conversations"][1]["value"] for row in rows]
