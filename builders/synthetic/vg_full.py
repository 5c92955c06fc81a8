"""``scale=vg_full``: the six Visual Genome annotation files at the size of the real v1.2 release, no images.

108,077 images with about 50 regions (5.4 M in all), 35 objects, 21 relationships and 16 questions each, as
in v1.2. Scenes are *virtual* (boxes may overlap and nothing is drawn), but every phrase, attribute,
relationship and answer is computed from the scene's objects exactly as for the small releases. Records are
encoded one image at a time with orjson and streamed to disk, so memory stays flat whatever the scale.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from builders.synthetic.releases.vg import VgWriter
from builders.synthetic.scene import Scene, SceneObject
from builders.synthetic.vocab import BACKGROUNDS, COLOURS, SHAPES, SIZES, TEXTURES

VG_IMAGES = 108_077
VG_IMAGE_SIZES = ((800, 600), (500, 333), (640, 480), (800, 533), (600, 800), (1024, 768))
OBJECTS_PER_IMAGE = (25, 45)
EXTRA_REGIONS = (10, 20)      # relation regions on top of one region per object: ~50 regions per image
RELATIONSHIPS_PER_IMAGE = 21
QUESTIONS_PER_IMAGE = 16
_SHAPE_NAMES, _COLOUR_NAMES, _SIZE_NAMES = tuple(SHAPES), tuple(COLOURS), tuple(SIZES)


def virtual_scene(rng: random.Random, image_id: int) -> Scene:
    """A scene with ground truth but no picture: boxes are drawn at random inside the image."""
    draw = rng.random  # index arithmetic on random() is several times faster than rng.choice / randint

    def pick(options: tuple | list):
        return options[int(draw() * len(options))]

    width, height = pick(VG_IMAGE_SIZES)
    scene = Scene(key=f"vg_full:{image_id}", width=width, height=height, background=pick(BACKGROUNDS))
    factor = width / 320
    low_count, high_count = OBJECTS_PER_IMAGE
    for index in range(low_count + int(draw() * (high_count - low_count + 1))):
        size = pick(_SIZE_NAMES)
        low, high = SIZES[size]
        side = int((low + draw() * (high - low)) * factor)
        x, y = int(draw() * (width - side)), int(draw() * (height - side))
        scene.objects.append(SceneObject(index, pick(_SHAPE_NAMES), pick(_COLOUR_NAMES), size, pick(TEXTURES), (),
                                         (x, y, x + side, y + side)))
    return scene


def write_vg_full(root: Path, seed: int, images: int = VG_IMAGES,
                  progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Stream ``images`` virtual images into ``root``'s six files; ``progress(n)`` is called every 1000."""
    writer = VgWriter(root)
    rng = random.Random(seed)  # one stream for the whole file: per-image seeding would dominate the run time
    for image_id in range(1, images + 1):
        scene = virtual_scene(rng, image_id)
        links = {"coco_id": 200_000 + image_id} if image_id % 2 == 0 else (
            {"flickr_id": 3_000_000_000 + image_id} if image_id % 7 == 0 else {})
        writer.add(scene, image_id, rng, extra_regions=rng.randint(*EXTRA_REGIONS),
                   max_relationships=RELATIONSHIPS_PER_IMAGE, max_questions=QUESTIONS_PER_IMAGE, **links)
        if progress and image_id % 1000 == 0:
            progress(1000)
    writer.close()
    return dict(writer.counts)
