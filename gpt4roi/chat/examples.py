"""Built-in example pictures for the page, drawn from code so that the chat works without any download.

Each is a simple scene of distinct objects (good targets for boxes) rendered deterministically with PIL.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image, ImageDraw


def _street() -> Image.Image:
    image = Image.new("RGB", (800, 600), (135, 190, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 400, 800, 600], fill=(90, 90, 95))  # road
    draw.rectangle([0, 380, 800, 400], fill=(170, 170, 160))  # pavement
    for x in range(20, 800, 120):
        draw.rectangle([x, 495, x + 60, 505], fill=(240, 240, 240))  # lane marks
    draw.rectangle([80, 200, 330, 380], fill=(200, 170, 120))  # house
    draw.polygon([(60, 200), (205, 110), (350, 200)], fill=(150, 60, 50))  # roof
    draw.rectangle([180, 290, 230, 380], fill=(100, 60, 30))  # door
    draw.rectangle([110, 230, 160, 270], fill=(220, 235, 250))  # window
    draw.rectangle([500, 250, 530, 380], fill=(110, 75, 40))  # tree trunk
    draw.ellipse([440, 130, 590, 280], fill=(50, 140, 60))  # tree crown
    draw.ellipse([650, 40, 740, 130], fill=(250, 220, 60))  # sun
    draw.rounded_rectangle([420, 440, 640, 520], radius=18, fill=(200, 30, 40))  # car body
    draw.rounded_rectangle([470, 405, 590, 450], radius=12, fill=(170, 25, 35))  # car cabin
    for cx in (470, 590):
        draw.ellipse([cx - 26, 500, cx + 26, 552], fill=(20, 20, 20))  # wheels
    return image


def _table() -> Image.Image:
    image = Image.new("RGB", (640, 480), (235, 225, 205))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 300, 640, 480], fill=(150, 100, 60))  # table top
    draw.ellipse([80, 210, 190, 320], fill=(200, 30, 30))  # apple
    draw.rectangle([132, 195, 138, 215], fill=(90, 60, 20))  # apple stem
    draw.chord([230, 200, 400, 330], start=20, end=160, fill=(240, 210, 60))  # banana
    draw.rectangle([450, 190, 540, 320], fill=(60, 110, 200))  # cup
    draw.arc([520, 215, 580, 285], start=-90, end=90, fill=(60, 110, 200), width=10)  # cup handle
    draw.rectangle([60, 40, 250, 170], outline=(80, 60, 40), width=8, fill=(170, 210, 230))  # picture frame
    return image


EXAMPLES: dict[str, Callable[[], Image.Image]] = {"street": _street, "table": _table}


def example_names() -> list[str]:
    return list(EXAMPLES)


def example_image(name: str) -> Image.Image:
    """The example called ``name``; a ``KeyError`` naming the choices otherwise."""
    try:
        return EXAMPLES[name]()
    except KeyError:
        raise KeyError(f"no example called {name!r} (choose from {', '.join(EXAMPLES)})") from None
