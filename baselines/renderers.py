"""Region renderers for image-level models: how a model without region features sees ``<regionK>``.

See docs/design.md#region-rendering.

A schema row stores its regions once, as boxes; GPT4RoI splices a RoI feature in for ``<regionK>``
(``gpt4roi.processing``). A model that only sees whole images needs the region handed to it some other way,
and a fair comparison gives it every fair way (Osprey and ViP-Bench showed that the choice moves image-level
models by tens of points). Each renderer turns a row and its image into the text the model reads and the
images it sees:

=================  ==========================================  ==================================================
renderer           text for ``<regionK>``                      images
=================  ==========================================  ==================================================
``image_words``    ``the object`` (one region) / ``object K``  the full image
``image_coords``   ``region{K} [x1, y1, x2, y2]`` at the first  the full image
                   mention, ``region{K}`` later; normalised
                   floats (3 decimals), integers in [0,1000)
                   or integer pixels of the original image
``image_overlay``  ``the region in the red box`` (region K     the full image with box K outlined in colour K
                   in colour K: red, blue, green, ...)
``image_crop``     as ``image_words``                          the union of the regions, enlarged by ``margin``
``image_crop_full`` as ``image_words``                         the crop, then the full image
``blind``          as ``image_words``                          none (``<image>`` removed from the text)
=================  ==========================================  ==================================================

Assistant turns name regions in plain text (``region2``, schema rule); they are renamed the same way as the
human turns' later mentions, so that answers stay consistent with the question the model read. Renderers live
in ``builders`` (PIL only) so that the evaluators may use them too; they never modify the row passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from builders.boxes import union_box, xyxy_to_normalized
from builders.placeholders import IMAGE_TOKEN, REGION_PATTERN, strip_image_token

PLAIN_REGION = re.compile(r"\bregion(\d+)\b")
# Colours for overlay boxes, by the name the text uses (saturated, far apart, readable after resizing).
OVERLAY_COLOURS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (255, 0, 0)), ("blue", (0, 64, 255)), ("green", (0, 200, 0)), ("yellow", (255, 230, 0)),
    ("purple", (160, 0, 220)), ("orange", (255, 140, 0)), ("cyan", (0, 230, 230)), ("pink", (255, 105, 180)),
)
COORD_FORMATS = ("float", "int1000", "pixels")


@dataclass(frozen=True)
class Rendered:
    """What an image-level model is given for one row: the row with its text rewritten, and its images."""

    row: dict[str, Any]
    images: list[Image.Image]


@dataclass(frozen=True)
class RegionRenderer:
    """One way of showing regions to an image-level model (see the module table).

    ``name`` picks the renderer; the other fields configure it: ``coords`` (``float``, ``int1000`` or ``pixels``),
    ``line_width`` of overlay boxes in pixels (``None``: 2% of the image's longer side, at least 2, so that the
    box survives resizing to a small vision tower), ``margin`` of crops as a fraction of the crop box's size on
    each side, ``word`` for a single region and ``numbered_word`` (with ``{k}``) for rows with several.
    """

    name: str = "image_words"
    coords: str = "float"
    line_width: int | None = None
    margin: float = 0.2
    word: str = "the object"
    numbered_word: str = "object {k}"

    def __post_init__(self) -> None:
        if self.name not in RENDERERS:
            raise ValueError(f"unknown renderer {self.name!r}; choose from {sorted(RENDERERS)}")
        if self.coords not in COORD_FORMATS:
            raise ValueError(f"renderer coords={self.coords!r}; choose from {COORD_FORMATS}")
        if self.margin < 0:
            raise ValueError(f"renderer margin={self.margin} must be >= 0 (a fraction of the box size)")
        if self.line_width is not None and self.line_width < 1:
            raise ValueError(f"renderer line_width={self.line_width} must be >= 1 pixel (or null for automatic)")

    @property
    def num_images(self) -> int:
        """Images per row this renderer produces (the model's image spans per prompt)."""
        return {"blind": 0, "image_crop_full": 2}.get(self.name, 1)

    def __call__(self, row: Mapping[str, Any], image: Image.Image | None) -> Rendered:
        """The rendered row and images; ``image`` may be ``None`` only for ``blind``."""
        if image is None and self.num_images:
            raise ValueError(f"row {row.get('id')!r}: renderer {self.name} needs the row's image")
        return RENDERERS[self.name](self, row, image)

    # --- text ---------------------------------------------------------------------------------------------
    def word_for(self, k: int, count: int) -> str:
        """The words naming region ``k`` (1-based) of a row with ``count`` regions."""
        return self.word if count <= 1 else self.numbered_word.format(k=k)

    def box_text(self, row: Mapping[str, Any], k: int) -> str:
        """``[x1, y1, x2, y2]`` of region ``k`` in the configured format: normalised by the row's image size, or
        rounded pixels of the original image (``pixels``, the convention of models that read absolute boxes)."""
        if self.coords == "pixels":
            return "[" + ", ".join(str(round(v)) for v in row["regions"][k - 1]["bbox"]) + "]"
        box = xyxy_to_normalized(row["regions"][k - 1]["bbox"], float(row["width"]), float(row["height"]))
        if self.coords == "int1000":
            values = [str(min(999, max(0, int(v * 1000)))) for v in box]
        else:
            values = [f"{min(1.0, max(0.0, v)):.3f}" for v in box]
        return "[" + ", ".join(values) + "]"


def _rewrite(row: Mapping[str, Any], first: Callable[[int], str], later: Callable[[int], str], *,
             keep_image: bool = True) -> dict[str, Any]:
    """A copy of ``row`` whose human ``<regionK>`` become ``first(K)`` at the first mention and ``later(K)``
    after, and whose assistant ``regionK`` become ``later(K)``; ``keep_image=False`` drops ``<image>``."""
    seen: set[int] = set()
    count = len(row.get("regions") or [])

    def human(match: re.Match[str]) -> str:
        k = int(match.group(1))
        if not 1 <= k <= count:
            raise ValueError(f"row {row.get('id')!r}: <region{k}> refers to a region the row does not have "
                             f"({count} regions)")
        if k in seen:
            return later(k)
        seen.add(k)
        return first(k)

    turns = []
    for turn in row.get("conversations") or []:
        value = str(turn.get("value", ""))
        if turn.get("from") == "human":
            value = REGION_PATTERN.sub(human, value)
            if not keep_image and IMAGE_TOKEN in value:
                value = strip_image_token(value)
        else:
            value = PLAIN_REGION.sub(lambda m: later(int(m.group(1))) if 1 <= int(m.group(1)) <= count
                                     else m.group(0), value)
        turns.append({**turn, "value": value})
    return {**row, "conversations": turns}


def _in_words(renderer: RegionRenderer, row: Mapping[str, Any], keep_image: bool = True) -> dict[str, Any]:
    count = len(row.get("regions") or [])
    name = lambda k: renderer.word_for(k, count)  # noqa: E731 - the same words at every mention
    return _rewrite(row, name, name, keep_image=keep_image)


def _mentioned(row: Mapping[str, Any]) -> list[int]:
    """1-based region numbers the human turns mention, in order of first mention (all regions if none)."""
    order: list[int] = []
    for turn in row.get("conversations") or []:
        if turn.get("from") == "human":
            order += [k for k in map(int, REGION_PATTERN.findall(str(turn.get("value", "")))) if k not in order]
    return order or list(range(1, len(row.get("regions") or []) + 1))


# --- the renderers ------------------------------------------------------------------------------------------
def render_words(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> Rendered:
    return Rendered(_in_words(renderer, row), [image])


def render_coords(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> Rendered:
    text = _rewrite(row, lambda k: f"region{k} {renderer.box_text(row, k)}", lambda k: f"region{k}")
    return Rendered(text, [image])


def overlay_colour(k: int) -> tuple[str, tuple[int, int, int]]:
    """The colour name and RGB of region ``k``'s box (1-based; cycles after the palette)."""
    return OVERLAY_COLOURS[(k - 1) % len(OVERLAY_COLOURS)]


def render_overlay(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> Rendered:
    """Each mentioned box outlined inside its edges (pixel columns x1..x2-1), ``line_width`` pixels thick."""
    canvas = image.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = renderer.line_width or max(2, round(0.02 * max(canvas.size)))
    scale_x, scale_y = canvas.width / float(row["width"]), canvas.height / float(row["height"])
    for k in _mentioned(row):
        x1, y1, x2, y2 = row["regions"][k - 1]["bbox"]
        box = [round(x1 * scale_x), round(y1 * scale_y), round(x2 * scale_x) - 1, round(y2 * scale_y) - 1]
        draw.rectangle(box, outline=overlay_colour(k)[1], width=width)
    phrase = lambda k: f"the region in the {overlay_colour(k)[0]} box"  # noqa: E731
    return Rendered(_rewrite(row, phrase, phrase), [canvas])


def crop_box(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> tuple[int, int, int, int]:
    """The pixel box cropped: the union of the mentioned regions, enlarged by ``margin`` on each side, clipped
    to the image, at least one pixel wide and high."""
    scale_x, scale_y = image.width / float(row["width"]), image.height / float(row["height"])
    x1, y1, x2, y2 = union_box([row["regions"][k - 1]["bbox"] for k in _mentioned(row)])
    pad_x, pad_y = renderer.margin * (x2 - x1), renderer.margin * (y2 - y1)
    left = max(0, int((x1 - pad_x) * scale_x))
    top = max(0, int((y1 - pad_y) * scale_y))
    right = min(image.width, max(left + 1, round((x2 + pad_x) * scale_x)))
    bottom = min(image.height, max(top + 1, round((y2 + pad_y) * scale_y)))
    return left, top, right, bottom


def render_crop(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> Rendered:
    return Rendered(_in_words(renderer, row), [image.convert("RGB").crop(crop_box(renderer, row, image))])


def render_crop_full(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image) -> Rendered:
    crop = image.convert("RGB").crop(crop_box(renderer, row, image))
    return Rendered(_in_words(renderer, row), [crop, image.convert("RGB")])


def render_blind(renderer: RegionRenderer, row: Mapping[str, Any], image: Image.Image | None) -> Rendered:
    return Rendered(_in_words(renderer, row, keep_image=False), [])


RENDERERS: dict[str, Callable[[RegionRenderer, Mapping[str, Any], Any], Rendered]] = {
    "image_words": render_words,
    "image_coords": render_coords,
    "image_overlay": render_overlay,
    "image_crop": render_crop,
    "image_crop_full": render_crop_full,
    "blind": render_blind,
}


def renderer_from_config(cfg: Mapping[str, Any] | str | None) -> RegionRenderer:
    """A renderer from a config block (``{name: image_coords, coords: int1000}``) or a bare name."""
    if cfg is None:
        raise ValueError("no renderer configured (expected e.g. renderer: {name: image_words})")
    if isinstance(cfg, str):
        return RegionRenderer(name=cfg)
    known = {"name", "coords", "line_width", "margin", "word", "numbered_word"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"renderer config has unknown key(s) {unknown}; known: {sorted(known)}")
    return RegionRenderer(**dict(cfg))

