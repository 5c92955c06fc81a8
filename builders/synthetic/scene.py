"""Scenes: a backdrop and a few coloured shapes, with the ground truth of every object.

A scene is generated from its own ``random.Random`` (seeded from the world seed and the scene's key), so
every scene is the same whatever else the world contains. Objects never overlap, so each box shows its whole
object; at least two objects share a shape or a colour, so a question about "the circle" or "the red object"
is ambiguous without the region.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from builders.synthetic.vocab import BACKGROUNDS, COLOURS, ORDINALS, SHAPES, SIZES, TEXTURES, Background

IMAGE_SIZES: tuple[tuple[int, int], ...] = ((320, 240), (288, 224), (256, 256), (240, 320), (320, 256),
                                            (224, 288))
PLACEMENT_MARGIN = 6  # free pixels between two objects and between an object and the border
ORDINAL_MARGIN = 8    # an ordinal word ("leftmost") needs the runner-up's centre at least this far away


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; ``box`` is xyxy in integer pixels (exclusive right/bottom edge), tight around it."""

    index: int
    shape: str
    colour: str
    size: str
    texture: str
    polygon: tuple[tuple[float, float], ...]
    box: tuple[int, int, int, int]

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def xywh(self) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = self.box
        return (x1, y1, x2 - x1, y2 - y1)

    def attribute(self, name: str) -> str:
        return getattr(self, name)


@dataclass
class Scene:
    key: str
    width: int
    height: int
    background: Background
    objects: list[SceneObject] = field(default_factory=list)

    def matching(self, **attributes: str) -> list[SceneObject]:
        """Objects whose named attributes (shape, colour, size, texture) all equal the given values."""
        return [obj for obj in self.objects
                if all(obj.attribute(name) == value for name, value in attributes.items())]


def shape_polygon(shape: str, x: int, y: int, side: int) -> tuple[tuple[float, float], ...]:
    """The outline of ``shape`` inscribed in the square ``(x, y, side)``; a circle is a 24-gon."""
    cx, cy, r = x + side / 2, y + side / 2, side / 2
    if shape == "square":
        return ((x, y), (x + side, y), (x + side, y + side), (x, y + side))
    if shape == "triangle":
        return ((cx, y), (x + side, y + side), (x, y + side))
    if shape == "diamond":
        return ((cx, y), (x + side, cy), (cx, y + side), (x, cy))
    if shape == "circle":
        return tuple((cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
                     for a in range(0, 360, 15))
    if shape == "hexagon":
        return tuple((cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a)))
                     for a in range(0, 360, 60))
    if shape == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.45
            angle = math.radians(-90 + 36 * k)
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        return tuple(points)
    raise ValueError(f"unknown shape {shape!r}")


def polygon_box(polygon: tuple[tuple[float, float], ...]) -> tuple[int, int, int, int]:
    xs = [p[0] for p in polygon]
    ys = [p[1] for p in polygon]
    return (math.floor(min(xs)), math.floor(min(ys)), math.ceil(max(xs)), math.ceil(max(ys)))


def _free(box: tuple[int, int, int, int], placed: list[SceneObject]) -> bool:
    m = PLACEMENT_MARGIN
    return all(box[2] + m <= o.box[0] or o.box[2] + m <= box[0] or box[3] + m <= o.box[1] or o.box[3] + m <= box[1]
               for o in placed)


def _attributes(rng: random.Random, placed: list[SceneObject]) -> tuple[str, str, str, str]:
    """Shape, colour, size, texture; the second object always repeats a shape or colour of an earlier one."""
    shape, colour = rng.choice(list(SHAPES)), rng.choice(list(COLOURS))
    if placed and (len(placed) == 1 or rng.random() < 0.5):
        model = rng.choice(placed)
        if rng.random() < 0.5:
            shape = model.shape
        else:
            colour = model.colour
    return shape, colour, rng.choice(list(SIZES)), rng.choice(TEXTURES)


def make_scene(rng: random.Random, key: str, n_objects: tuple[int, int] = (3, 6)) -> Scene:
    """A scene of ``n_objects`` (inclusive range) non-overlapping objects on a random backdrop.

    An object that does not fit after a few tries is dropped, but a scene keeps at least two objects (so
    the shared-attribute rule holds): the first two objects are tried until they fit.
    """
    width, height = rng.choice(IMAGE_SIZES)
    scene = Scene(key=key, width=width, height=height, background=rng.choice(BACKGROUNDS))
    wanted = rng.randint(*n_objects)
    for slot in range(wanted):
        tries = 200 if slot < 2 else 30
        shape, colour, size, texture = _attributes(rng, scene.objects)
        for _ in range(tries):
            side = rng.randint(*SIZES[size])
            x = rng.randint(PLACEMENT_MARGIN, width - side - PLACEMENT_MARGIN)
            y = rng.randint(PLACEMENT_MARGIN, height - side - PLACEMENT_MARGIN)
            polygon = tuple((round(px, 2), round(py, 2)) for px, py in shape_polygon(shape, x, y, side))
            box = polygon_box(polygon)
            if _free(box, scene.objects):
                scene.objects.append(SceneObject(len(scene.objects), shape, colour, size, texture, polygon, box))
                break
            if slot < 2 and size == "large":
                size = "medium"  # a crowded first pair shrinks instead of failing
    if len(scene.objects) < 2:
        raise RuntimeError(f"scene {key}: could not place two objects")  # cannot happen at these sizes
    return scene


def relation_holds(relation: str, a: SceneObject, b: SceneObject) -> bool:
    """Spatial relations are strict: the boxes are separated along the axis (no overlap of projections)."""
    if relation == "left of":
        return a.box[2] <= b.box[0]
    if relation == "right of":
        return b.box[2] <= a.box[0]
    if relation == "above":
        return a.box[3] <= b.box[1]
    if relation == "below":
        return b.box[3] <= a.box[1]
    raise ValueError(f"unknown relation {relation!r}")


def extreme(ordinal: str, candidates: list[SceneObject]) -> SceneObject | None:
    """The candidate that is clearly ``ordinal`` (leftmost, ...): its centre beats the runner-up by a margin."""
    if len(candidates) < 2:
        return None
    axis, sign = ORDINALS[ordinal]
    ranked = sorted(candidates, key=lambda o: sign * o.centre[axis])
    if sign * (ranked[1].centre[axis] - ranked[0].centre[axis]) < ORDINAL_MARGIN:
        return None
    return ranked[0]
