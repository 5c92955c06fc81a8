"""The synthetic world's vocabulary: shapes, colours, sizes, textures and backgrounds.

Every word here names something a viewer can check on the picture: colours are far apart in RGB, size
classes have gaps between them, textures are patterns drawn in shades of the object's own colour (so the
colour word stays true whatever the texture).
"""

from __future__ import annotations

from dataclasses import dataclass

# Shape -> COCO-style category id. The ids are non-contiguous on purpose, as COCO's are (1..90 for 80 classes).
SHAPES: dict[str, int] = {"circle": 1, "square": 2, "triangle": 3, "diamond": 5, "star": 7, "hexagon": 9}
SUPERCATEGORY: dict[str, str] = {"circle": "round", "square": "polygon", "triangle": "polygon",
                                 "diamond": "polygon", "star": "polygon", "hexagon": "polygon"}
SHAPE_PLURAL: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
# WordNet-style synsets for Visual Genome's ``synsets`` fields.
SHAPE_SYNSET: dict[str, str] = {"circle": "circle.n.01", "square": "square.n.01", "triangle": "triangle.n.01",
                                "diamond": "diamond.n.02", "star": "star.n.03", "hexagon": "hexagon.n.01"}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 88, 214),
    "yellow": (240, 205, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 20),
    "cyan": (30, 200, 215),
}
COLOUR_SYNSET: dict[str, str] = {name: f"{name}.s.01" for name in COLOURS}

# Size class -> inclusive range of the object's box side in pixels; the gaps keep the words unambiguous.
SIZES: dict[str, tuple[int, int]] = {"small": (20, 30), "medium": (40, 52), "large": (64, 80)}
SIZE_ORDER: dict[str, int] = {"small": 0, "medium": 1, "large": 2}

TEXTURES: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")


@dataclass(frozen=True)
class Background:
    """A backdrop: its name in captions, base colour, and pattern (plain, gradient, grid, noise)."""

    name: str
    rgb: tuple[int, int, int]
    pattern: str


BACKGROUNDS: tuple[Background, ...] = (
    Background("grey", (128, 128, 128), "plain"),
    Background("beige", (222, 210, 182), "gradient"),
    Background("dark slate", (58, 66, 78), "grid"),
    Background("light grey", (200, 200, 205), "noise"),
    Background("brown", (110, 84, 62), "gradient"),
    Background("pale blue", (190, 205, 225), "grid"),
)

# Spatial relation -> (VG predicate, synset). Each is checked on the boxes (see ``scene.relation_holds``).
RELATIONS: dict[str, str] = {"left of": "left.r.01", "right of": "right.r.01", "above": "above.r.01",
                             "below": "below.r.01"}
INVERSE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below",
                                    "below": "above"}
# Ordinal words of referring expressions -> (axis, sign): the object with the extreme box centre.
ORDINALS: dict[str, tuple[int, int]] = {"leftmost": (0, 1), "rightmost": (0, -1), "highest": (1, 1),
                                        "lowest": (1, -1)}

NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)
