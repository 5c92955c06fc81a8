"""A deterministic synthetic world written as raw releases in every original format.

``synthesize(out, scale, seed)`` writes one raw root per source under ``out`` (``coco``, ``refer``, ``vg``,
``flickr30k``, ``vcr``, ``llava``) plus ``world.json``, the ground truth of every scene. Scenes are coloured
shapes on varied backdrops (:mod:`.scene`), drawn with PIL (:mod:`.draw`); all text is computed from the
ground truth (:mod:`.language`). ``scale="vg_full"`` writes only Visual Genome's annotation files at the real
release's size (:mod:`.vg_full`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from builders.storage.output import atomic_directory
from builders.synthetic.releases import coco, flickr30k, llava, refer, vcr, vg
from builders.synthetic.releases.variants import CONVERTERS
from builders.synthetic.vg_full import write_vg_full
from builders.synthetic.vocab import SHAPES
from builders.synthetic.world import SCALES, World

# Release folder -> writer; the order fixes which release holds the original of a shared picture.
RELEASES = {"coco": coco.write, "flickr30k": flickr30k.write, "refer": refer.write, "vg": vg.write,
            "vcr": vcr.write, "llava": llava.write}
# Source name in the builder registry -> the release folder that is its raw_root.
SOURCE_RELEASE = {"coco": "coco", "refcoco": "refer", "refcoco+": "refer", "refcocog": "refer", "vg": "vg",
                  "flickr30k": "flickr30k", "vcr": "vcr", "llava": "llava"}
# Builder options a synthetic raw root needs: detector labels index the world's shapes, not COCO's classes;
# the VG release lists held-out images in ``test_image_ids.txt`` (the real release has no split).
SOURCE_OPTIONS: dict[str, dict[str, Any]] = {"llava": {"class_names": list(SHAPES)},
                                             "vg": {"test_image_ids": "test_image_ids.txt"}}
SCALE_NAMES = (*SCALES, "vg_full")
MANIFEST = "world.json"  # ground truth of every scene; also marks a folder as a synthetic world


def synthesize(out: str | Path, scale: str = "tiny", seed: int = 0, *, variants: bool = True,
               vg_images: int | None = None, progress: Any = None) -> dict[str, dict[str, Any]]:
    """Write the world into ``out`` (replaced atomically) and return per release its counts and seconds.

    ``variants`` adds the MDETR / GRiT preprocessed files beside the originals (:mod:`.releases.variants`).
    ``vg_images`` shrinks ``vg_full`` (for tests); ``progress(n)`` reports vg_full images as they are written.
    """
    if scale not in SCALE_NAMES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALE_NAMES)}")
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ValueError(f"refusing to replace {out}: it is not empty and holds no {MANIFEST} "
                         "(the synthetic world replaces its output folder; pick a new or empty one)")
    summary: dict[str, dict[str, Any]] = {}
    with atomic_directory(out) as tmp:
        if scale == "vg_full":
            started = time.perf_counter()
            counts = write_vg_full(tmp / "vg", seed, **({"images": vg_images} if vg_images else {}),
                                   progress=progress)
            summary["vg"] = {**counts, "seconds": time.perf_counter() - started}
            (tmp / MANIFEST).write_bytes(orjson.dumps({"seed": seed, "scale": scale, "vg": counts, "scenes": []},
                                                      option=orjson.OPT_INDENT_2))
        else:
            world = World(seed, scale)
            for name, write in RELEASES.items():
                started = time.perf_counter()
                counts = write(world, tmp / name)
                if variants and name in CONVERTERS:
                    counts.update(CONVERTERS[name](tmp / name))
                summary[name] = {**counts, "seconds": time.perf_counter() - started}
            (tmp / MANIFEST).write_bytes(orjson.dumps(world.manifest(tmp), option=orjson.OPT_INDENT_2))
    return summary
