"""Numbered boxes on an image: the one picture of "which region is <regionK>" shared by the demo, the chat
page's exports and the overlay baseline.

Box K of a row is ``<regionK>`` in its conversation, so the tag drawn on it is K (1-based). Colours cycle
through a palette chosen to stay visible on light and dark images; every box has a dark outline under its
coloured one so it can be told apart from shapes of the same colour in the picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 160, 255), (255, 200, 0), (0, 200, 120), (220, 80, 255), (255, 128, 0), (0, 220, 220),
    (255, 105, 180),
)


def draw_regions(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str] | None = None, *,
                 width: int = 2, start: int = 1) -> Image.Image:
    """A copy of ``image`` with each xyxy box outlined and tagged with its number (``start``, ``start + 1``, ...).

    ``labels`` (optional, one per box) are appended to the number in the tag, e.g. ``"2 circle"``.
    """
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        colour = PALETTE[k % len(PALETTE)]
        draw.rectangle([x1 - 1, y1 - 1, x2 + 1, y2 + 1], outline=(0, 0, 0), width=width + 2)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        tag = str(start + k) + (f" {labels[k]}" if labels and labels[k] else "")
        left, top, right, bottom = draw.textbbox((0, 0), tag, font=font)
        tag_w, tag_h = right - left + 4, bottom - top + 4
        tag_y = y1 - tag_h if y1 - tag_h >= 0 else y1
        draw.rectangle([x1, tag_y, x1 + tag_w, tag_y + tag_h], fill=colour)
        draw.text((x1 + 2 - left, tag_y + 2 - top), tag, fill=(0, 0, 0), font=font)
    return canvas


def open_row_image(row: dict[str, Any], raw_root: str | Path | None = None) -> Image.Image:
    """The picture of a schema row: embedded bytes (published datasets) or a path relative to ``raw_root``."""
    image = row["image"]
    if isinstance(image, dict):
        if image.get("bytes"):
            return Image.open(io.BytesIO(image["bytes"]))
        image = image.get("path")
    if not image:
        raise ValueError(f"row {row.get('id')!r} has no image")
    path = Path(raw_root) / image if raw_root is not None else Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"row {row.get('id')!r}: image {path} not found (is raw_root right?)")
    return Image.open(path)


def render_row(row: dict[str, Any], raw_root: str | Path | None = None, *, with_labels: bool = False) -> Image.Image:
    """The row's image with ``regions[K-1]`` tagged ``K``, i.e. as ``<regionK>`` reads in its conversation."""
    boxes = [region["bbox"] for region in row["regions"]]
    labels = [region.get("label", "") for region in row["regions"]] if with_labels else None
    return draw_regions(open_row_image(row, raw_root), boxes, labels)
