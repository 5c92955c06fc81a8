"""Built-in example pictures: scenes of the synthetic world (builders.synthetic), so no download is needed.

They are the pictures of the synthetic COCO validation images at seed 0 (what ``gpt4roi synth`` writes),
rendered on demand: coloured shapes on a backdrop, good targets for boxes.
"""

from __future__ import annotations

from PIL import Image

from builders.seeding import row_rng
from builders.synthetic.draw import draw_scene
from builders.synthetic.world import World

SEED = 0
EXAMPLES: dict[str, str] = {f"synthetic-{index + 1}": f"coco:val:{index}" for index in range(4)}


def example_names() -> list[str]:
    return list(EXAMPLES)


def example_image(name: str) -> Image.Image:
    """The example called ``name``; a ``KeyError`` naming the choices otherwise."""
    if name not in EXAMPLES:
        raise KeyError(f"no example called {name!r} (choose from {', '.join(EXAMPLES)})")
    scene = World(SEED, "tiny").scene(EXAMPLES[name])
    return draw_scene(scene, row_rng(SEED, f"draw:{scene.key}"))
