"""The world: which scenes exist at a scale, which release shows which picture, and the shared images.

Releases share pictures as the real ones do: RefCOCO and LLaVA use COCO train images, some Visual Genome
images are COCO or Flickr30K pictures (``coco_id`` / ``flickr_id``). Every scene is generated from
``row_rng(seed, scene key)``; a picture is rendered once and hard-linked wherever else it appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builders.seeding import row_rng
from builders.synthetic.draw import draw_scene, encode_jpeg
from builders.synthetic.files import link_or_copy
from builders.synthetic.scene import Scene, make_scene


@dataclass(frozen=True)
class Scale:
    """Image counts per release at one scale."""

    coco: dict[str, int]
    flickr: dict[str, int]
    vcr: dict[str, int]
    vg_own: int
    vg_from_coco: int     # VG images that are COCO train pictures (coco_id set)
    vg_from_flickr: int   # VG images that are Flickr30K pictures (flickr_id set)
    vcr_questions: int    # questions per VCR image


SCALES: dict[str, Scale] = {
    "tiny": Scale(coco={"train": 24, "val": 8}, flickr={"train": 16, "val": 4, "test": 4},
                  vcr={"train": 12, "val": 6}, vg_own=16, vg_from_coco=6, vg_from_flickr=4, vcr_questions=2),
    "small": Scale(coco={"train": 240, "val": 60}, flickr={"train": 160, "val": 30, "test": 30},
                   vcr={"train": 150, "val": 50}, vg_own=200, vg_from_coco=80, vg_from_flickr=40, vcr_questions=3),
}


def coco_image_id(split: str, index: int) -> int:
    """COCO-like 6-digit ids, disjoint between train and val (real ids are shared by 2014 and 2017)."""
    return (100_000 if split == "train" else 500_000) + 37 * index + 11


def flickr_image_id(index: int) -> int:
    return 1_000_000_000 + 7_919 * index + 3


class World:
    """Scenes by key, generated on first use, and the image files written so far."""

    def __init__(self, seed: int, scale: str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)} or vg_full")
        self.seed = seed
        self.scale_name = scale
        self.scale = SCALES[scale]
        self._scenes: dict[str, Scene] = {}
        self._files: dict[str, list[Path]] = {}

    def scene(self, key: str) -> Scene:
        if key not in self._scenes:
            self._scenes[key] = make_scene(row_rng(self.seed, f"scene:{key}"), key)
        return self._scenes[key]

    def coco_scenes(self, split: str) -> list[tuple[int, Scene]]:
        return [(coco_image_id(split, i), self.scene(f"coco:{split}:{i}")) for i in range(self.scale.coco[split])]

    def flickr_scenes(self, split: str) -> list[tuple[int, Scene]]:
        offset = {"train": 0, "val": 10_000, "test": 20_000}[split]
        return [(flickr_image_id(offset + i), self.scene(f"flickr:{split}:{i}"))
                for i in range(self.scale.flickr[split])]

    def image(self, scene: Scene, target: Path) -> None:
        """Write ``scene``'s picture at ``target``: rendered the first time, hard-linked afterwards."""
        written = self._files.setdefault(scene.key, [])
        if written:
            link_or_copy(written[0], target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_jpeg(draw_scene(scene, row_rng(self.seed, f"draw:{scene.key}"))))
        written.append(target)

    def manifest(self, out: Path) -> dict[str, Any]:
        """The ground truth of every scene and where its picture lies (``world.json``), for checks and tests."""
        scenes = []
        for key in sorted(self._scenes):
            scene = self._scenes[key]
            scenes.append({
                "key": key, "width": scene.width, "height": scene.height, "background": scene.background.name,
                "files": sorted(path.relative_to(out).as_posix() for path in self._files.get(key, [])),
                "objects": [{"index": o.index, "shape": o.shape, "colour": o.colour, "size": o.size,
                             "texture": o.texture, "box": list(o.box), "polygon": [list(p) for p in o.polygon]}
                            for o in scene.objects],
            })
        return {"seed": self.seed, "scale": self.scale_name, "scenes": scenes}
