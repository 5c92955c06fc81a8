"""Drawing a scene with PIL, and saving it with fixed encoder settings (byte-identical files per seed)."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from builders.synthetic.scene import Scene, SceneObject
from builders.synthetic.vocab import COLOURS

JPEG_SETTINGS = {"format": "JPEG", "quality": 90, "subsampling": 0, "optimize": False, "progressive": False}


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour; the hue is kept."""
    if factor <= 1:
        return tuple(int(c * factor) for c in rgb)
    return tuple(int(c + (255 - c) * (factor - 1)) for c in rgb)


def _background(scene: Scene, rng: random.Random) -> Image.Image:
    background = scene.background
    image = Image.new("RGB", (scene.width, scene.height), background.rgb)
    draw = ImageDraw.Draw(image)
    if background.pattern == "gradient":
        for y in range(scene.height):
            draw.line([(0, y), (scene.width, y)], fill=_shade(background.rgb, 0.8 + 0.35 * y / scene.height))
    elif background.pattern == "grid":
        step = rng.choice((16, 24, 32))
        line = _shade(background.rgb, 0.85 if sum(background.rgb) > 384 else 1.25)
        for x in range(0, scene.width, step):
            draw.line([(x, 0), (x, scene.height)], fill=line)
        for y in range(0, scene.height, step):
            draw.line([(0, y), (scene.width, y)], fill=line)
    elif background.pattern == "noise":
        for _ in range(scene.width * scene.height // 40):
            x, y = rng.randrange(scene.width), rng.randrange(scene.height)
            draw.point((x, y), fill=_shade(background.rgb, rng.uniform(0.85, 1.1)))
    return image


def _texture(obj: SceneObject) -> Image.Image:
    """The object's colour with its pattern, as a tile covering its box."""
    x1, y1, x2, y2 = obj.box
    base = COLOURS[obj.colour]
    tile = Image.new("RGB", (x2 - x1, y2 - y1), base)
    draw = ImageDraw.Draw(tile)
    dark, light = _shade(base, 0.6), _shade(base, 1.45)
    w, h = tile.size
    if obj.texture == "striped":
        for x in range(-h, w, 8):
            draw.line([(x, h), (x + h, 0)], fill=dark, width=3)
    elif obj.texture == "dotted":
        for y in range(3, h, 8):
            for x in range(3 + (y // 8 % 2) * 4, w, 8):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=light)
    elif obj.texture == "checkered":
        for y in range(0, h, 6):
            for x in range(0, w, 6):
                if (x // 6 + y // 6) % 2:
                    draw.rectangle([x, y, x + 5, y + 5], fill=dark)
    return tile


def object_mask(obj: SceneObject, size: tuple[int, int]) -> Image.Image:
    """The object's filled polygon as an ``L`` mask of the whole image."""
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon(list(obj.polygon), fill=255)
    return mask


def draw_scene(scene: Scene, rng: random.Random) -> Image.Image:
    image = _background(scene, rng)
    for obj in scene.objects:
        mask = object_mask(obj, image.size).crop(obj.box)
        image.paste(_texture(obj), obj.box[:2], mask)
    return image


def encode_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **JPEG_SETTINGS)
    return buffer.getvalue()
