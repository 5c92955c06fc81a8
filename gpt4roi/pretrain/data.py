"""What the toy backbone is pretrained on: the synthetic world's training text and training images only.

The world is built with the real builders (every source, as ``gpt4roi demo`` does). An image is **held out**
when any row of any non-``train`` split shows it (RefCOCO/+/g val/test, COCO val, VG test, VCR val, Flickr30K
val/test); a scene is held out when any of its files is (one scene is one picture, hard-linked into several
releases). The language model reads the ``train`` rows of scenes that are not held out, rendered in the
conversation template the models later see (:func:`gpt4roi.processing.render_turns`, without image or region
tokens); the vision tower sees crops of the objects of those scenes with their ground-truth descriptions; the
projector sees those scenes whole with a caption listing their objects (:func:`scene_caption`), as LLaVA's
alignment stage saw CC3M's image-caption pairs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from PIL import Image

from builders.build import build_source
from builders.sources import BUILDERS
from builders.synthetic import MANIFEST, SOURCE_OPTIONS, SOURCE_RELEASE

from ..conversation import SYSTEM_MESSAGE
from ..processing import render_turns
from ..tokenizer import ROI_TOKEN


@dataclass(frozen=True)
class Crop:
    """One object of a training scene: its image file (under the world), box and description."""

    image: str
    box: tuple[float, float, float, float]
    description: str


@dataclass(frozen=True)
class Caption:
    """One training scene whole: its image file (under the world) and a caption naming its objects."""

    image: str
    text: str


@dataclass(frozen=True)
class PretrainData:
    texts: list[str]
    crops: list[Crop]
    captions: list[Caption]
    held_out_scenes: int
    training_scenes: int

    @property
    def fingerprint(self) -> str:
        """sha256 of every training text and crop, in order: what the manifest records."""
        sha = hashlib.sha256()
        for text in self.texts:
            sha.update(text.encode() + b"\0")
        for crop in self.crops:
            sha.update(json.dumps([crop.image, crop.box, crop.description]).encode())
        for caption in self.captions:
            sha.update(json.dumps([caption.image, caption.text]).encode())
        return sha.hexdigest()


def describe(obj: dict[str, Any]) -> str:
    """The ground-truth description of an object, in the world's referring-expression words."""
    texture = "" if obj["texture"] == "plain" else f"{obj['texture']} "
    return f"the {obj['size']} {texture}{obj['colour']} {obj['shape']}"


def scene_caption(scene: dict[str, Any]) -> str:
    """A short caption of a whole scene: its objects' descriptions, left to right (CC3M-style, one sentence)."""
    names = [describe(obj) for obj in sorted(scene["objects"], key=lambda obj: (obj["box"][0], obj["box"][1]))]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed[0].upper()}{listed[1:]}."


def document(row: dict[str, Any]) -> str:
    """A training row as the language model reads it: system message and turns, no image or region tokens."""
    text = "".join(segment.text for turn in render_turns(row, "") for segment in turn.segments)
    return SYSTEM_MESSAGE + "\n\n" + text.replace(f" {ROI_TOKEN}", "")


def built_rows(world: Path, built: Path, seed: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(release folder, row)`` of every split of every source, built under ``built``."""
    for source in BUILDERS:
        release = SOURCE_RELEASE[source]
        report = build_source(source, world / release, built / source, seed=seed,
                              options=SOURCE_OPTIONS.get(source), progress=False)
        for split in sorted(report.written):
            for shard in sorted((built / source / "data").glob(f"{split}-*.parquet")):
                for row in pq.read_table(shard, columns=["id", "split", "image", "regions", "conversations"]).to_pylist():
                    yield release, {**row, "image": row["image"]["path"]}  # a build stores paths, not bytes


def pretrain_data(world: Path, built: Path, seed: int) -> PretrainData:
    """Texts and crops of the training scenes of ``world`` (see the module docstring)."""
    manifest = json.loads((world / MANIFEST).read_text())
    scene_of = {file: index for index, scene in enumerate(manifest["scenes"]) for file in scene["files"]}
    rows = list(built_rows(world, built, seed))
    held_out: set[int] = set()
    for release, row in rows:
        if row["split"] != "train":
            path = f"{release}/{row['image']}"
            if path not in scene_of:
                raise ValueError(f"row {row['id']}: image {path} is not a scene of {world / MANIFEST}")
            held_out.add(scene_of[path])
    texts = [document(row) for release, row in rows
             if row["split"] == "train" and scene_of.get(f"{release}/{row['image']}") not in held_out]
    training = [scene for index, scene in enumerate(manifest["scenes"]) if index not in held_out]
    crops = [Crop(scene["files"][0], tuple(float(v) for v in obj["box"]), describe(obj))
             for scene in training for obj in scene["objects"]]
    captions = [Caption(scene["files"][0], scene_caption(scene)) for scene in training if scene["objects"]]
    return PretrainData(texts, crops, captions, len(held_out), len(manifest["scenes"]) - len(held_out))


def load_crop(world: Path, crop: Crop, margin: float) -> Image.Image:
    """The object's box widened by ``margin`` of its size per side, clipped to the image."""
    with Image.open(world / crop.image) as image:
        x1, y1, x2, y2 = crop.box
        dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
        return image.convert("RGB").crop((max(0, int(x1 - dx)), max(0, int(y1 - dy)),
                                          min(image.width, int(x2 + dx + 0.5)), min(image.height, int(y2 + dy + 0.5))))
